//! Bearer tokens and the admin key check every service with admin operations uses.

use actix_web::HttpRequest;

use crate::config::Secret;
use crate::error::AppError;

/// The token of an `Authorization: Bearer <token>` header; the scheme is matched
/// case-insensitively (RFC 9110), surrounding spaces are ignored.
pub fn bearer_token(req: &HttpRequest) -> Option<&str> {
    let value = req.headers().get(actix_web::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Compares two secrets in time that does not depend on where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

/// Checks the admin key of an admin operation: 403 when no key is configured (the
/// operation is disabled; `setting` names the variable that enables it), 401 when the
/// request carries none or another one.
pub fn require_admin(req: &HttpRequest, key: &Secret, setting: &str) -> Result<(), AppError> {
    if key.is_empty() {
        return Err(AppError::forbidden(format!("this admin operation is disabled: set {setting} to enable it")));
    }
    match bearer_token(req) {
        Some(token) if same_secret(token, key.expose()) => Ok(()),
        Some(_) => Err(AppError::unauthorized("invalid admin key")),
        None => Err(AppError::unauthorized("missing admin key: send it as \"Authorization: Bearer <key>\"")),
    }
}

/// Checks the credential one service shows another (cache-service's API, cv-processor's
/// internal route): with no key configured the route is open (a local run); with one,
/// a request without it gets 401.
pub fn require_service_key(req: &HttpRequest, key: &Secret, setting: &str) -> Result<(), AppError> {
    if key.is_empty() {
        return Ok(());
    }
    match bearer_token(req) {
        Some(token) if same_secret(token, key.expose()) => Ok(()),
        _ => Err(AppError::unauthorized(format!("missing or wrong service credential (the caller's {setting})"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn secrets_compare_by_value() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "abcd"));
        assert!(!same_secret("", "a"));
    }

    #[test]
    fn the_admin_key_is_checked_whatever_the_scheme_case() {
        let key = Secret::new("k-123");
        for header in ["Bearer k-123", "bearer k-123", "BEARER   k-123 "] {
            let req = TestRequest::default().insert_header(("authorization", header)).to_http_request();
            assert!(require_admin(&req, &key, "ADMIN_API_KEY").is_ok(), "{header}");
        }
        let wrong = TestRequest::default().insert_header(("authorization", "Bearer k-124")).to_http_request();
        assert_eq!(require_admin(&wrong, &key, "ADMIN_API_KEY").map_err(|e| e.kind().status().as_u16()), Err(401));
        let basic = TestRequest::default().insert_header(("authorization", "Basic k-123")).to_http_request();
        assert!(require_admin(&basic, &key, "ADMIN_API_KEY").is_err());
        let off = require_admin(&wrong, &Secret::default(), "ADMIN_API_KEY").map_err(|e| e.kind().status().as_u16());
        assert_eq!(off, Err(403));
    }
}
