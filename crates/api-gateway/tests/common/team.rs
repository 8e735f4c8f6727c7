//! A company with people in every role, signed in through the real routes: the operator
//! creates the company with its owner's invitation, the owner accepts it and invites
//! the rest, each invitee accepts the token found in the email outbox.

use diesel_async::RunQueryDsl;
use serde_json::{Value, json};

use super::{ADMIN_KEY, Stack};

pub const PASSWORD: &str = "a long enough passphrase";

/// One signed-in person.
#[derive(Debug, Clone)]
pub struct Member {
    pub user_id: i64,
    pub email: String,
    pub role: &'static str,
    /// Session token.
    pub token: String,
}

#[derive(Debug, Clone)]
pub struct Team {
    pub company_id: i64,
    /// The company's API key (no user).
    pub api_key: String,
    pub owner: Member,
    pub admin: Member,
    pub recruiter: Member,
    pub viewer: Member,
}

impl Team {
    pub fn members(&self) -> [&Member; 4] {
        [&self.owner, &self.admin, &self.recruiter, &self.viewer]
    }
}

#[derive(diesel::QueryableByName)]
struct Mail {
    #[diesel(sql_type = diesel::sql_types::Text)]
    body: String,
}

/// The invitation token in the newest email to `email`.
pub async fn token_from_outbox(stack: &Stack, email: &str) -> anyhow::Result<String> {
    let mut conn = stack.main_db.connect().await?;
    let mail: Mail = diesel::sql_query("SELECT body FROM email_outbox WHERE recipient = $1 ORDER BY id DESC LIMIT 1")
        .bind::<diesel::sql_types::Text, _>(email)
        .get_result(&mut conn)
        .await?;
    let start = mail.body.find("hhi_").ok_or_else(|| anyhow::anyhow!("no token in {:?}", mail.body))?;
    Ok(mail.body[start..start + 44].to_owned())
}

/// Accepts `token` with the test password; returns the answer's status and body.
pub async fn accept(stack: &Stack, token: &str) -> anyhow::Result<(u16, Value)> {
    let res = stack
        .http
        .post(format!("{}/api/v1/invitations/accept", stack.url))
        .json(&json!({"token": token, "password": PASSWORD}))
        .send()
        .await?;
    Ok((res.status().as_u16(), res.json().await?))
}

async fn join(stack: &Stack, token: &str, email: &str, role: &'static str) -> anyhow::Result<Member> {
    let (status, body) = accept(stack, token).await?;
    anyhow::ensure!(status == 201, "accepting {email}'s invitation answered {status}: {body}");
    Ok(Member {
        user_id: body["user_id"].as_i64().ok_or_else(|| anyhow::anyhow!("no user_id in {body}"))?,
        email: email.to_owned(),
        role,
        token: body["token"].as_str().unwrap_or_default().to_owned(),
    })
}

/// Invites `email` as `role` with `by`'s session; returns the invitation's id.
pub async fn invite(stack: &Stack, by: &Member, email: &str, role: &str) -> anyhow::Result<i64> {
    let res = stack
        .http
        .post(format!("{}/api/v1/invitations", stack.url))
        .bearer_auth(&by.token)
        .json(&json!({"email": email, "role": role}))
        .send()
        .await?;
    let status = res.status();
    let body: Value = res.json().await?;
    anyhow::ensure!(status == 201, "inviting {email} answered {status}: {body}");
    body["id"].as_i64().ok_or_else(|| anyhow::anyhow!("no id in {body}"))
}

/// A company named `name` with an owner, an admin, a recruiter and a viewer.
pub async fn team(stack: &Stack, name: &str) -> anyhow::Result<Team> {
    let domain = format!("{}.example.com", test_support::unique_suffix());
    let owner_email = format!("owner@{domain}");
    let res = stack
        .http
        .post(format!("{}/api/v1/admin/companies", stack.url))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": name, "owner_email": owner_email}))
        .send()
        .await?;
    anyhow::ensure!(res.status() == 201, "create company answered {}", res.status());
    let body: Value = res.json().await?;
    let company_id = body["company"]["id"].as_i64().unwrap_or_default();
    let api_key = body["api_key"]["key"].as_str().unwrap_or_default().to_owned();
    let owner_token = body["owner_invitation"]["token"].as_str().unwrap_or_default().to_owned();
    let owner = join(stack, &owner_token, &owner_email, "owner").await?;
    let mut others = Vec::new();
    for role in ["admin", "recruiter", "viewer"] {
        let email = format!("{role}@{domain}");
        invite(stack, &owner, &email, role).await?;
        let token = token_from_outbox(stack, &email).await?;
        others.push(join(stack, &token, &email, role).await?);
    }
    let [admin, recruiter, viewer]: [Member; 3] =
        others.try_into().map_err(|_| anyhow::anyhow!("three members expected"))?;
    Ok(Team { company_id, api_key, owner, admin, recruiter, viewer })
}

/// Audit rows of `company`.
pub async fn audit_rows(stack: &Stack, company: i64) -> anyhow::Result<i64> {
    test_support::query_count(
        &stack.main_db.url,
        &format!("SELECT count(*) AS n FROM audit_log WHERE company_id = {company}"),
    )
    .await
}
