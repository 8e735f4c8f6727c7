//! Who may do what: the one place permissions are decided. Roles form a ladder
//! (`viewer` < `recruiter` < `admin` < `owner`); each action names the lowest role
//! allowed to take it. The README's role table is this table.
//!
//! A company API key without a user acts as a `recruiter` (it runs the pipeline: jobs,
//! CVs, LLM calls); a user's key acts with that user's role. A key is further held to
//! its scopes, and the actions that govern access itself (people, keys, the audit
//! trail) take a signed-in person: a leaked key cannot mint keys or promote anyone.

use serde::{Deserialize, Serialize};
use service_kit::AppError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Viewer,
    Recruiter,
    Admin,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Recruiter, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Recruiter => "recruiter",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == text)
    }

    /// Reads a role a client sent in `field`, or a 400 naming the field.
    pub fn from_input(field: &'static str, text: &str) -> Result<Role, AppError> {
        Role::parse(text).ok_or_else(|| {
            AppError::bad_request(
                field,
                "invalid_value",
                format!("`{field}` must be one of owner, admin, recruiter, viewer, not {text:?}"),
            )
        })
    }

    /// Whether this role may give `other` to someone, or change someone who has it: only
    /// an owner makes or touches owners; an admin manages everyone else.
    pub fn may_manage(self, other: Role) -> bool {
        self.allows(Action::ManagePeople) && (self == Role::Owner || other < Role::Owner)
    }

    pub fn allows(self, action: Action) -> bool {
        self >= action.least_role()
    }
}

/// What a request does, for the permission check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Read jobs, CVs, matches, CV events, colleagues' names.
    Read,
    /// Create, edit and archive jobs; applications, interviews, feedback.
    WriteJobs,
    /// Upload and delete CVs.
    WriteCvs,
    /// Call the LLM proxy.
    UseLlm,
    /// Invite people, change roles, deactivate accounts.
    ManagePeople,
    /// Read the audit trail.
    ReadAudit,
    /// Create, rotate and revoke API keys.
    ManageKeys,
    /// Read the company's LLM usage and cost figures and the calls behind them.
    ReadAnalytics,
    /// Change the company's own settings: its timezone and its daily spend alert.
    ManageSettings,
}

impl Action {
    pub const ALL: [Action; 9] = [
        Action::Read,
        Action::WriteJobs,
        Action::WriteCvs,
        Action::UseLlm,
        Action::ManagePeople,
        Action::ReadAudit,
        Action::ManageKeys,
        Action::ReadAnalytics,
        Action::ManageSettings,
    ];

    /// The lowest role allowed to take this action: the permission table.
    pub const fn least_role(self) -> Role {
        match self {
            Action::Read => Role::Viewer,
            Action::WriteJobs | Action::WriteCvs | Action::UseLlm => Role::Recruiter,
            Action::ManagePeople
            | Action::ReadAudit
            | Action::ManageKeys
            | Action::ReadAnalytics
            | Action::ManageSettings => Role::Admin,
        }
    }

    /// The scope a key needs for this action; `None`: no key may take it.
    pub const fn scope(self) -> Option<Scope> {
        match self {
            Action::Read | Action::ReadAnalytics => Some(Scope::Read),
            Action::WriteJobs | Action::WriteCvs => Some(Scope::CvsWrite),
            Action::UseLlm => Some(Scope::Llm),
            Action::ManagePeople | Action::ReadAudit | Action::ManageKeys | Action::ManageSettings => None,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Action::Read => "read jobs, CVs and matches",
            Action::WriteJobs => "change jobs, applications or interviews",
            Action::WriteCvs => "upload or delete CVs",
            Action::UseLlm => "call the LLM",
            Action::ManagePeople => "manage people and invitations",
            Action::ReadAudit => "read the audit trail",
            Action::ManageKeys => "manage API keys",
            Action::ReadAnalytics => "read the LLM usage and cost analytics",
            Action::ManageSettings => "change the company's settings",
        }
    }
}

/// What a key may do on top of its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    CvsWrite,
    Llm,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::CvsWrite, Scope::Llm];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::CvsWrite => "cvs:write",
            Scope::Llm => "llm",
        }
    }

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// A key's scopes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scopes(u8);

impl Scopes {
    pub const EVERY: Scopes = Scopes(0b111);

    pub fn contains(self, scope: Scope) -> bool {
        self.0 & scope.bit() != 0
    }

    /// From the stored names; unknown names are ignored (the table refuses them).
    pub fn from_names<S: AsRef<str>>(names: &[S]) -> Scopes {
        Scopes(
            Scope::ALL
                .into_iter()
                .filter(|s| names.iter().any(|n| n.as_ref() == s.as_str()))
                .fold(0, |bits, s| bits | s.bit()),
        )
    }

    /// Reads scopes a client sent in `field`: a non-empty list of known names.
    pub fn from_input(field: &'static str, names: &[String]) -> Result<Scopes, AppError> {
        if let Some(bad) = names.iter().find(|n| !Scope::ALL.iter().any(|s| s.as_str() == n.as_str())) {
            return Err(AppError::bad_request(
                field,
                "invalid_value",
                format!("`{field}` takes read, cvs:write and llm, not {bad:?}"),
            ));
        }
        let scopes = Scopes::from_names(names);
        if scopes.0 == 0 {
            return Err(AppError::bad_request(field, "invalid_value", format!("`{field}` needs at least one scope")));
        }
        Ok(scopes)
    }

    pub fn names(self) -> Vec<&'static str> {
        Scope::ALL.into_iter().filter(|s| self.contains(*s)).map(Scope::as_str).collect()
    }
}

/// 403 for a key without the scope, or any key, attempting `action`.
pub fn refused_to_key(action: Action) -> AppError {
    let message = match action.scope() {
        Some(scope) => format!("this API key may not {}: it lacks the `{}` scope", action.describe(), scope.as_str()),
        None => format!("an API key may not {}: sign in", action.describe()),
    };
    AppError::forbidden(message).with_code("insufficient_scope")
}

/// 403 for `role` attempting `action`.
pub fn refused(role: Role, action: Action) -> AppError {
    AppError::forbidden(format!(
        "a {} may not {}: it takes the {} role or above",
        role.as_str(),
        action.describe(),
        action.least_role().as_str()
    ))
    .with_code("insufficient_role")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_form_a_ladder_and_only_owners_touch_owners() {
        assert!(Role::Owner > Role::Admin && Role::Admin > Role::Recruiter && Role::Recruiter > Role::Viewer);
        assert!(Role::Viewer.allows(Action::Read) && !Role::Viewer.allows(Action::WriteJobs));
        assert!(Role::Recruiter.allows(Action::UseLlm) && !Role::Recruiter.allows(Action::ManagePeople));
        assert!(Role::Admin.may_manage(Role::Admin) && !Role::Admin.may_manage(Role::Owner));
        assert!(Role::Owner.may_manage(Role::Owner));
        assert!(!Role::Recruiter.may_manage(Role::Viewer));
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("member"), None);
        let scopes = Scopes::from_names(&["llm", "read"]);
        assert!(scopes.contains(Scope::Llm) && scopes.contains(Scope::Read) && !scopes.contains(Scope::CvsWrite));
        assert_eq!(scopes.names(), ["read", "llm"]);
        assert!(Scopes::from_input("scopes", &["admin".to_owned()]).is_err());
        assert!(Scopes::from_input("scopes", &[]).is_err());
    }
}
