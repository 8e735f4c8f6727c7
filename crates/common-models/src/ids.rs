//! Newtype ids, so a company id can never be passed where a user id belongs.

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

id_type!(
    /// A tenant.
    CompanyId
);
id_type!(
    /// A person inside a tenant.
    UserId
);
id_type!(
    /// An interview the call was made for (the recruiting domain's main unit of work).
    InterviewId
);
id_type!(
    /// A row of `api_keys`.
    ApiKeyId
);
id_type!(
    /// A job a company recruits for.
    JobId
);
id_type!(
    /// An uploaded CV.
    CvId
);
