//! People, roles, sessions, invitations and the audit trail, through the running
//! gateway against real PostgreSQL and Redis.
#![expect(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::team::{self, Member, PASSWORD, Team, accept, audit_rows, invite, token_from_outbox};
use common::{Options, Stack};
use reqwest::Method;
use serde_json::{Value, json};

fn no_worker() -> Options {
    Options { with_worker: false, ..Options::default() }
}

async fn call(stack: &Stack, token: &str, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
    call_at(stack, &stack.url, token, method, path, body).await
}

async fn call_at(
    stack: &Stack,
    base: &str,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req =
        stack.http.request(method, format!("{base}{path}")).bearer_auth(token).header("user-agent", "people-test");
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

async fn create_job(stack: &Stack, token: &str, title: &str) -> i64 {
    let (status, body) =
        call(stack, token, Method::POST, "/api/v1/jobs", Some(json!({"title": title, "requirements": ["Rust"]}))).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_i64().unwrap()
}

async fn upload_cv(stack: &Stack, token: &str, name: &str) -> i64 {
    let part = reqwest::multipart::Part::bytes(format!("{name}\nRust engineer, 6 years.\n").into_bytes())
        .file_name(format!("{name}.txt"))
        .mime_str("text/plain")
        .unwrap();
    let res = stack
        .http
        .post(format!("{}/api/v1/cvs", stack.url))
        .bearer_auth(token)
        .multipart(reqwest::multipart::Form::new().part("file", part))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    body["data"][0]["id"].as_i64().unwrap()
}

/// The roles allowed on each route, written out here (not derived from the code's
/// table) so a change to either shows up.
const VIEWER_UP: &[&str] = &["owner", "admin", "recruiter", "viewer"];
const RECRUITER_UP: &[&str] = &["owner", "admin", "recruiter"];
const ADMIN_UP: &[&str] = &["owner", "admin"];

#[tokio::test]
async fn every_role_gets_exactly_the_routes_the_table_allows() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let team = team::team(&stack, "Roles Ltd").await.unwrap();
    let job = create_job(&stack, &team.owner.token, "Backend engineer").await;
    let cv = upload_cv(&stack, &team.owner.token, "ada").await;
    // Someone every manager may edit, and invitations to resend and revoke.
    invite(&stack, &team.owner, "target@roles.example.com", "viewer").await.unwrap();
    let target_token = token_from_outbox(&stack, "target@roles.example.com").await.unwrap();
    let target = accept(&stack, &target_token).await.unwrap().1["user_id"].as_i64().unwrap();

    let (status, app) = call(
        &stack,
        &team.owner.token,
        Method::POST,
        "/api/v1/applications",
        Some(json!({"job_id": job, "cv_id": cv})),
    )
    .await;
    assert_eq!(status, 201, "{app}");
    let app = app["id"].as_i64().unwrap();

    let mut routes: Vec<(Method, String, Option<Value>, &[&str])> = vec![
        (Method::GET, "/api/v1/me".into(), None, VIEWER_UP),
        (Method::GET, "/api/v1/jobs".into(), None, VIEWER_UP),
        (Method::GET, format!("/api/v1/jobs/{job}"), None, VIEWER_UP),
        (Method::POST, "/api/v1/jobs".into(), Some(json!({"title": "Data engineer"})), RECRUITER_UP),
        (Method::PATCH, format!("/api/v1/jobs/{job}"), Some(json!({"location": "Remote"})), RECRUITER_UP),
        (Method::POST, format!("/api/v1/jobs/{job}/archive"), None, RECRUITER_UP),
        (Method::GET, "/api/v1/cvs".into(), None, VIEWER_UP),
        (Method::GET, format!("/api/v1/cvs/{cv}"), None, VIEWER_UP),
        (Method::GET, format!("/api/v1/cvs/{cv}/file"), None, VIEWER_UP),
        (Method::GET, format!("/api/v1/jobs/{job}/matches"), None, VIEWER_UP),
        (Method::GET, format!("/api/v1/cvs/{cv}/matches"), None, VIEWER_UP),
        (Method::POST, "/v1/chat/completions".into(), Some(common::chat_body(false)), RECRUITER_UP),
        (Method::GET, "/api/v1/users".into(), None, VIEWER_UP),
        (Method::GET, format!("/api/v1/users/{target}"), None, VIEWER_UP),
        (Method::PATCH, format!("/api/v1/users/{target}"), Some(json!({"full_name": "Target"})), ADMIN_UP),
        (Method::GET, "/api/v1/invitations".into(), None, ADMIN_UP),
        (Method::GET, "/api/v1/audit".into(), None, ADMIN_UP),
        (Method::GET, "/api/v1/api-keys".into(), None, ADMIN_UP),
        (Method::GET, "/api/v1/applications".into(), None, VIEWER_UP),
        (Method::POST, "/api/v1/applications".into(), Some(json!({"job_id": job, "cv_id": cv})), RECRUITER_UP),
        // No cv-processor runs here: the CV stays queued, an allowed request gets 409.
        (Method::POST, format!("/api/v1/applications/{app}/analysis"), None, RECRUITER_UP),
        (Method::GET, format!("/api/v1/applications/{app}/analyses"), None, VIEWER_UP),
        (Method::GET, "/api/v1/analyses/1".into(), None, VIEWER_UP),
        (Method::POST, "/api/v1/api-keys".into(), Some(json!({"name": "ci", "scopes": ["read"]})), ADMIN_UP),
    ];
    let roles: Vec<(&str, &str)> = team.members().iter().map(|m| (m.role, m.token.as_str())).collect();
    // Routes that change one invitation: each allowed role needs its own.
    for (role, _) in &roles {
        let email = format!("{role}-pending@roles.example.com");
        let id = invite(&stack, &team.owner, &email, "viewer").await.unwrap();
        for (method, path) in [
            (Method::POST, format!("/api/v1/invitations/{id}/resend")),
            (Method::DELETE, format!("/api/v1/invitations/{id}")),
        ] {
            routes.push((method, path, Some(json!({})), ADMIN_UP));
        }
        routes.push((
            Method::POST,
            "/api/v1/invitations".into(),
            Some(json!({"email": format!("{role}-new@roles.example.com"), "role": "viewer"})),
            ADMIN_UP,
        ));
    }

    let mut checked = 0;
    for (method, path, body, allowed) in &routes {
        for (role, token) in &roles {
            let (status, answer) = call(&stack, token, method.clone(), path, body.clone()).await;
            if allowed.contains(role) {
                // No cv-processor runs here: matches end in 502/503 once allowed.
                let upstream = path.contains("matches");
                assert!(
                    ![401, 403].contains(&status) && (status < 500 || upstream),
                    "{role} {method} {path}: {status} {answer}"
                );
            } else {
                assert_eq!(status, 403, "{role} {method} {path} should be refused: {answer}");
                assert_eq!(answer["error"]["code"], "insufficient_role");
            }
            checked += 1;
        }
    }
    // The company key without a user acts as a recruiter.
    let (status, _) = call(&stack, &team.api_key, Method::GET, "/api/v1/audit", None).await;
    assert_eq!(status, 403);
    let (status, _) = call(&stack, &team.api_key, Method::POST, "/api/v1/jobs", Some(json!({"title": "By key"}))).await;
    assert_eq!(status, 201);
    assert!(checked >= 4 * 20, "{checked}");
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn another_company_sees_none_of_a_companys_objects() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let a = team::team(&stack, "Alpha").await.unwrap();
    let b = team::team(&stack, "Beta").await.unwrap();
    let job = create_job(&stack, &a.owner.token, "Alpha's job").await;
    let cv = upload_cv(&stack, &a.owner.token, "alpha-cv").await;
    let invitation = invite(&stack, &a.owner, "pending@alpha.example.com", "viewer").await.unwrap();
    let user = a.recruiter.user_id;
    let object_routes: Vec<(Method, String, Option<Value>)> = vec![
        (Method::GET, format!("/api/v1/jobs/{job}"), None),
        (Method::PATCH, format!("/api/v1/jobs/{job}"), Some(json!({"title": "Taken"}))),
        (Method::POST, format!("/api/v1/jobs/{job}/archive"), None),
        (Method::GET, format!("/api/v1/jobs/{job}/matches"), None),
        (Method::GET, format!("/api/v1/cvs/{cv}"), None),
        (Method::GET, format!("/api/v1/cvs/{cv}/file"), None),
        (Method::GET, format!("/api/v1/cvs/{cv}/matches"), None),
        (Method::DELETE, format!("/api/v1/cvs/{cv}"), None),
        (Method::GET, format!("/api/v1/users/{user}"), None),
        (Method::PATCH, format!("/api/v1/users/{user}"), Some(json!({"is_active": false}))),
        (Method::POST, format!("/api/v1/invitations/{invitation}/resend"), None),
        (Method::DELETE, format!("/api/v1/invitations/{invitation}"), None),
    ];
    for (method, path, body) in &object_routes {
        for token in [&b.owner.token, &b.api_key] {
            let (status, answer) = call(&stack, token, method.clone(), path, body.clone()).await;
            // A company key may not manage people (403 before any look-up); everything
            // else is simply not found.
            let people = path.contains("/users/") && *method == Method::PATCH || path.contains("invitations");
            let expected = if token == &b.api_key && people { 403 } else { 404 };
            assert_eq!(status, expected, "{method} {path}: {answer}");
        }
    }
    // Nothing changed on A's side.
    let (status, body) = call(&stack, &a.owner.token, Method::GET, &format!("/api/v1/jobs/{job}"), None).await;
    assert_eq!((status, body["title"].as_str()), (200, Some("Alpha's job")));
    let (status, body) = call(&stack, &a.owner.token, Method::GET, &format!("/api/v1/users/{user}"), None).await;
    assert_eq!((status, body["is_active"].as_bool()), (200, Some(true)));
    let (_, listed) = call(&stack, &b.owner.token, Method::GET, "/api/v1/users", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 4, "B sees its own four people only");
    let (_, audit) = call(&stack, &b.owner.token, Method::GET, "/api/v1/audit?limit=100", None).await;
    assert!(audit["data"].as_array().unwrap().iter().all(|r| r["object_id"] != json!(job)));
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn fields_a_client_may_not_set_are_refused_by_name_and_never_applied() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let team = team::team(&stack, "Mass Ltd").await.unwrap();
    let other = team::team(&stack, "Other Ltd").await.unwrap();
    let job = create_job(&stack, &team.owner.token, "Engineer").await;
    let audit_before = audit_rows(&stack, team.company_id).await.unwrap();
    let cases: Vec<(Method, String, Value, &str)> = vec![
        (Method::POST, "/api/v1/jobs".into(), json!({"title": "X", "company_id": other.company_id}), "company_id"),
        (Method::POST, "/api/v1/jobs".into(), json!({"title": "X", "id": 1}), "id"),
        (
            Method::PATCH,
            format!("/api/v1/jobs/{job}"),
            json!({"title": "Y", "created_at": "2020-01-01T00:00:00Z"}),
            "created_at",
        ),
        (Method::PATCH, format!("/api/v1/jobs/{job}"), json!({"company_id": other.company_id}), "company_id"),
        (
            Method::PATCH,
            format!("/api/v1/users/{}", team.viewer.user_id),
            json!({"full_name": "V", "company_id": other.company_id}),
            "company_id",
        ),
        (
            Method::PATCH,
            format!("/api/v1/users/{}", team.viewer.user_id),
            json!({"email": "evil@example.com"}),
            "email",
        ),
        (Method::PATCH, format!("/api/v1/users/{}", team.viewer.user_id), json!({"id": 1}), "id"),
        (
            Method::POST,
            "/api/v1/invitations".into(),
            json!({"email": "x@mass.example.com", "role": "viewer", "company_id": other.company_id}),
            "company_id",
        ),
    ];
    for (method, path, body, field) in cases {
        let (status, answer) = call(&stack, &team.owner.token, method.clone(), &path, Some(body)).await;
        assert_eq!(status, 400, "{method} {path}: {answer}");
        assert_eq!(answer["error"]["param"], field, "{answer}");
        assert_eq!(answer["error"]["code"], "unknown_field");
    }
    // Accepting an invitation cannot pick the role.
    invite(&stack, &team.owner, "climber@mass.example.com", "viewer").await.unwrap();
    let token = token_from_outbox(&stack, "climber@mass.example.com").await.unwrap();
    let res = stack
        .http
        .post(format!("{}/api/v1/invitations/accept", stack.url))
        .json(&json!({"token": token, "password": PASSWORD, "role": "owner"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["param"], "role");
    let (status, _) = accept(&stack, &token).await.unwrap();
    assert_eq!(status, 201, "the refused attempt did not use the invitation up");
    let (_, me) = call(&stack, &team.owner.token, Method::GET, "/api/v1/users?limit=100", None).await;
    let climber =
        me["data"].as_array().unwrap().iter().find(|u| u["email"] == "climber@mass.example.com").unwrap().clone();
    assert_eq!(climber["role"], "viewer");

    // Nothing moved: the job is the company's and untitled changes were not applied.
    let (_, job_now) = call(&stack, &team.owner.token, Method::GET, &format!("/api/v1/jobs/{job}"), None).await;
    assert_eq!(job_now["title"], "Engineer");
    let (status, _) = call(&stack, &other.owner.token, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(status, 200);
    let other_jobs = test_support::query_count(
        &stack.main_db.url,
        &format!("SELECT count(*) AS n FROM jobs WHERE company_id = {}", other.company_id),
    )
    .await
    .unwrap();
    assert_eq!(other_jobs, 0);
    // Only the invitation and its acceptance were audited.
    assert_eq!(audit_rows(&stack, team.company_id).await.unwrap(), audit_before + 2);
    stack.stop().await.unwrap();
}

async fn login(stack: &Stack, base: &str, email: &str, password: &str) -> reqwest::Response {
    stack
        .http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"email": email, "password": password}))
        .send()
        .await
        .unwrap()
}

fn error_of(body: &Value) -> Value {
    body["error"].clone()
}

#[tokio::test]
async fn logins_do_not_tell_unknown_people_from_wrong_passwords_and_are_throttled_across_replicas() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let team = team::team(&stack, "Login Ltd").await.unwrap();
    let (second, _spool) = stack.another_gateway().await.unwrap();

    // A good login: the token works, in the body and as an HttpOnly, Secure, Lax cookie.
    let res = login(&stack, &stack.url, &team.recruiter.email.to_uppercase(), PASSWORD).await;
    assert_eq!(res.status(), 200);
    let cookie = res.headers().get("set-cookie").unwrap().to_str().unwrap().to_owned();
    for attribute in ["hh_session=hhs_", "HttpOnly", "Secure", "SameSite=Lax", "Path=/", "Max-Age=3600"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    let body: Value = res.json().await.unwrap();
    assert_eq!((body["role"].as_str(), body["expires_in"].as_u64()), (Some("recruiter"), Some(3600)));
    let by_cookie = stack
        .http
        .get(format!("{}/api/v1/me", second.url))
        .header("cookie", format!("hh_session={}", body["token"].as_str().unwrap()))
        .send()
        .await
        .unwrap();
    assert_eq!(by_cookie.status(), 200, "a session works on every replica");
    assert_eq!(by_cookie.json::<Value>().await.unwrap()["user"]["email"], team.recruiter.email.as_str());

    // Unknown person and wrong password: the same answer, after the same work.
    let mut unknown_ms = Vec::new();
    let mut wrong_ms = Vec::new();
    let mut answers = Vec::new();
    for i in 0..3 {
        let started = Instant::now();
        let res = login(&stack, &stack.url, &format!("nobody{i}@login.example.com"), "a wrong password").await;
        unknown_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        answers.push((res.status().as_u16(), error_of(&res.json().await.unwrap())));
        let started = Instant::now();
        let res = login(&stack, &stack.url, &team.viewer.email, &format!("a wrong password {i}")).await;
        wrong_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        answers.push((res.status().as_u16(), error_of(&res.json().await.unwrap())));
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert_eq!(answers[0].0, 401);
    unknown_ms.sort_by(f64::total_cmp);
    wrong_ms.sort_by(f64::total_cmp);
    // Both run an Argon2id check: an unknown address is not answered from the lookup alone.
    assert!(unknown_ms[1] > wrong_ms[1] * 0.5, "unknown {unknown_ms:?} vs wrong {wrong_ms:?}");

    // Ten failures for one account within the minute, alternating replicas: the 11th
    // attempt is refused with 429, even with the right password; other accounts go on.
    let target = &team.admin.email;
    for i in 0..10 {
        let base = if i % 2 == 0 { &stack.url } else { &second.url };
        assert_eq!(login(&stack, base, target, "not the password").await.status(), 401, "attempt {}", i + 1);
    }
    let res = login(&stack, &second.url, target, PASSWORD).await;
    assert_eq!(res.status(), 429);
    let retry: u64 = res.headers().get("retry-after").unwrap().to_str().unwrap().parse().unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "login_throttled");
    let res = login(&stack, &stack.url, &team.owner.email, PASSWORD).await;
    assert_eq!(res.status(), 200, "another account is not affected");
    second.stop().await.unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn a_deactivated_user_loses_sessions_and_keys_on_every_replica_at_once() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let team = team::team(&stack, "Deactivate Ltd").await.unwrap();
    let (second, _spool) = stack.another_gateway().await.unwrap();
    // The recruiter also holds a key of their own.
    let (status, created) = call(
        &stack,
        &team.admin.token,
        Method::POST,
        "/api/v1/api-keys",
        Some(json!({"name": "recruiter's", "user_id": team.recruiter.user_id})),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    let second_session = login(&stack, &second.url, &team.recruiter.email, PASSWORD).await;
    let second_session = second_session.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned();
    // Both replicas have seen (and cached) the key, and accept both sessions.
    for base in [&stack.url, &second.url] {
        for token in [&key, &team.recruiter.token, &second_session] {
            let (status, body) = call_at(&stack, base, token, Method::GET, "/api/v1/jobs", None).await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, me) = call_at(&stack, base, &key, Method::GET, "/api/v1/me", None).await;
        assert_eq!((status, me["role"].as_str()), (200, Some("recruiter")), "a user's key carries their role");
    }

    let (status, body) = call(
        &stack,
        &team.admin.token,
        Method::PATCH,
        &format!("/api/v1/users/{}", team.recruiter.user_id),
        Some(json!({"is_active": false})),
    )
    .await;
    assert_eq!((status, body["is_active"].as_bool()), (200, Some(false)), "{body}");
    // Sessions end in Redis (no replica caches them); the key is dropped by the
    // published revocation. The bound is delivery: allow it a moment, far under the
    // 30 s key cache.
    let deadline = Instant::now() + Duration::from_secs(2);
    for base in [&stack.url, &second.url] {
        for token in [&key, &team.recruiter.token, &second_session] {
            loop {
                let (status, _) = call_at(&stack, base, token, Method::GET, "/api/v1/jobs", None).await;
                if status == 401 {
                    break;
                }
                assert!(Instant::now() < deadline, "{base} still accepts a deactivated user's credential ({status})");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    // And they cannot sign in again: the same answer as a wrong password.
    let res = login(&stack, &second.url, &team.recruiter.email, PASSWORD).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json::<Value>().await.unwrap()["error"]["code"], "invalid_credentials");
    // Reactivated: the key works again; sessions stay ended.
    let (status, _) = call(
        &stack,
        &team.admin.token,
        Method::PATCH,
        &format!("/api/v1/users/{}", team.recruiter.user_id),
        Some(json!({"is_active": true})),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = call_at(&stack, &second.url, &key, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(status, 200);
    let (status, _) = call_at(&stack, &second.url, &second_session, Method::GET, "/api/v1/jobs", None).await;
    assert_eq!(status, 401);
    second.stop().await.unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn sign_out_sign_out_everywhere_role_changes_and_new_passwords_end_sessions() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let team = team::team(&stack, "Sessions Ltd").await.unwrap();
    let me = |token: String| {
        let stack = &stack;
        async move { call(stack, &token, Method::GET, "/api/v1/me", None).await.0 }
    };
    let fresh = |member: Member| {
        let stack = &stack;
        async move {
            let res = login(stack, &stack.url, &member.email, PASSWORD).await;
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()["token"].as_str().unwrap().to_owned()
        }
    };
    // Sign out ends this session only, and clears the cookie.
    let other = fresh(team.viewer.clone()).await;
    let res = stack
        .http
        .post(format!("{}/api/v1/auth/logout", stack.url))
        .bearer_auth(&team.viewer.token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert!(res.headers().get("set-cookie").unwrap().to_str().unwrap().contains("hh_session=;"));
    assert_eq!(me(team.viewer.token.clone()).await, 401);
    assert_eq!(me(other.clone()).await, 200);
    // Sign out everywhere.
    let third = fresh(team.viewer.clone()).await;
    let (status, _) = call(&stack, &other, Method::POST, "/api/v1/auth/logout-all", None).await;
    assert_eq!(status, 204);
    assert_eq!((me(other).await, me(third).await), (401, 401));
    // An API key has no session to end.
    let (status, body) = call(&stack, &team.api_key, Method::POST, "/api/v1/auth/logout", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("not_a_session")));

    // A role change ends the user's sessions: the new role takes effect at once.
    let recruiter = fresh(team.recruiter.clone()).await;
    let (status, _) = call(
        &stack,
        &team.admin.token,
        Method::PATCH,
        &format!("/api/v1/users/{}", team.recruiter.user_id),
        Some(json!({"role": "viewer"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!((me(recruiter).await, me(team.recruiter.token.clone()).await), (401, 401));
    let demoted = fresh(team.recruiter.clone()).await;
    let (status, _) = call(&stack, &demoted, Method::POST, "/api/v1/jobs", Some(json!({"title": "No"}))).await;
    assert_eq!(status, 403);
    // Admins cannot touch owners or make them; nobody changes their own role.
    let owner = format!("/api/v1/users/{}", team.owner.user_id);
    let (status, _) = call(&stack, &team.admin.token, Method::PATCH, &owner, Some(json!({"is_active": false}))).await;
    assert_eq!(status, 403);
    let viewer = format!("/api/v1/users/{}", team.viewer.user_id);
    let (status, _) = call(&stack, &team.admin.token, Method::PATCH, &viewer, Some(json!({"role": "owner"}))).await;
    assert_eq!(status, 403);
    let own = format!("/api/v1/users/{}", team.owner.user_id);
    let (status, body) = call(&stack, &team.owner.token, Method::PATCH, &own, Some(json!({"role": "viewer"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("own_account")));

    // A new password ends every session, this one included; the old password is gone.
    let elsewhere = fresh(team.admin.clone()).await;
    let (status, body) = call(
        &stack,
        &team.admin.token,
        Method::POST,
        "/api/v1/me/password",
        Some(json!({"current_password": "wrong wrong wrong", "new_password": "another long passphrase"})),
    )
    .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("current_password")));
    let (status, body) = call(
        &stack,
        &team.admin.token,
        Method::POST,
        "/api/v1/me/password",
        Some(json!({"current_password": PASSWORD, "new_password": "short"})),
    )
    .await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("new_password")));
    let (status, _) = call(
        &stack,
        &team.admin.token,
        Method::POST,
        "/api/v1/me/password",
        Some(json!({"current_password": PASSWORD, "new_password": "another long passphrase"})),
    )
    .await;
    assert_eq!(status, 204);
    assert_eq!((me(elsewhere).await, me(team.admin.token.clone()).await), (401, 401));
    assert_eq!(login(&stack, &stack.url, &team.admin.email, PASSWORD).await.status(), 401);
    assert_eq!(login(&stack, &stack.url, &team.admin.email, "another long passphrase").await.status(), 200);
    // Stored as Argon2id, never as the password.
    let hashed = test_support::query_count(
        &stack.main_db.url,
        &format!(
            "SELECT count(*) AS n FROM users WHERE id = {} AND password_hash LIKE '$argon2id$v=19$m=19456,t=2,p=1$%'",
            team.admin.user_id
        ),
    )
    .await
    .unwrap();
    assert_eq!(hashed, 1);
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn invitation_tokens_work_once_expire_and_cannot_be_guessed_or_replayed() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let team = team::team(&stack, "Invite Ltd").await.unwrap();
    let invalid = |(status, body): (u16, Value)| {
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_invitation", "{body}");
        assert_eq!(body["error"]["param"], "token");
    };

    // Single use: the second acceptance is refused and creates nothing.
    invite(&stack, &team.admin, "once@invite.example.com", "recruiter").await.unwrap();
    let token = token_from_outbox(&stack, "once@invite.example.com").await.unwrap();
    let (status, body) = accept(&stack, &token).await.unwrap();
    assert_eq!((status, body["role"].as_str()), (201, Some("recruiter")));
    invalid(accept(&stack, &token).await.unwrap());
    // Only its digest is stored.
    let stored = test_support::query_count(
        &stack.main_db.url,
        &format!("SELECT count(*) AS n FROM user_invitations WHERE token_hash = sha256(convert_to('{token}', 'UTF8'))"),
    )
    .await
    .unwrap();
    assert_eq!(stored, 1);

    // Expired.
    let id = invite(&stack, &team.admin, "late@invite.example.com", "viewer").await.unwrap();
    let late = token_from_outbox(&stack, "late@invite.example.com").await.unwrap();
    let mut conn = stack.main_db.connect().await.unwrap();
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!(
            "UPDATE user_invitations SET expires_at = now() - interval '1 second' WHERE id = {id}"
        )),
        &mut conn,
    )
    .await
    .unwrap();
    invalid(accept(&stack, &late).await.unwrap());
    let (_, list) = call(&stack, &team.admin.token, Method::GET, "/api/v1/invitations", None).await;
    let listed = list["data"].as_array().unwrap().iter().find(|i| i["id"] == id).unwrap().clone();
    assert_eq!(listed["status"], "expired");
    assert!(listed.get("token_hash").is_none());
    // A resend issues a new token; the old one stays dead, the new one works.
    let (status, body) =
        call(&stack, &team.admin.token, Method::POST, &format!("/api/v1/invitations/{id}/resend"), None).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("pending")), "{body}");
    let renewed = token_from_outbox(&stack, "late@invite.example.com").await.unwrap();
    assert_ne!(renewed, late);
    invalid(accept(&stack, &late).await.unwrap());
    assert_eq!(accept(&stack, &renewed).await.unwrap().0, 201);

    // Revoked.
    let id = invite(&stack, &team.admin, "revoked@invite.example.com", "viewer").await.unwrap();
    let revoked = token_from_outbox(&stack, "revoked@invite.example.com").await.unwrap();
    let (status, _) = call(&stack, &team.admin.token, Method::DELETE, &format!("/api/v1/invitations/{id}"), None).await;
    assert_eq!(status, 204);
    invalid(accept(&stack, &revoked).await.unwrap());

    // Guessed: well-formed random tokens and malformed ones are the same refusal.
    for guess in
        [api_gateway::auth::random_token("hhi_").unwrap(), "hhi_short".into(), String::new(), format!("{token}x")]
    {
        invalid(accept(&stack, &guess).await.unwrap());
    }
    // Inviting someone who has an account, or twice: 409 naming the field.
    let (status, body) = call(
        &stack,
        &team.admin.token,
        Method::POST,
        "/api/v1/invitations",
        Some(json!({"email": team.viewer.email, "role": "viewer"})),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str(), body["error"]["param"].as_str()),
        (409, Some("already_a_user"), Some("email"))
    );
    invite(&stack, &team.admin, "twice@invite.example.com", "viewer").await.unwrap();
    let (status, body) = call(
        &stack,
        &team.admin.token,
        Method::POST,
        "/api/v1/invitations",
        Some(json!({"email": "Twice@Invite.example.com", "role": "viewer"})),
    )
    .await;
    assert_eq!((status, body["error"]["code"].as_str()), (409, Some("already_invited")));
    stack.stop().await.unwrap();
}

#[derive(diesel::QueryableByName, Debug)]
struct AuditRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    action: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    actor_kind: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::BigInt>)]
    actor_user_id: Option<i64>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    request_id: Option<String>,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    user_agent: Option<String>,
}

async fn audit_since(stack: &Stack, company: i64, after_id: i64) -> Vec<AuditRow> {
    let mut conn = stack.main_db.connect().await.unwrap();
    diesel_async::RunQueryDsl::load(
        diesel::sql_query(format!(
            "SELECT action, actor_kind, actor_user_id, request_id, user_agent FROM audit_log \
             WHERE company_id = {company} AND id > {after_id} ORDER BY id"
        )),
        &mut conn,
    )
    .await
    .unwrap()
}

async fn last_audit_id(stack: &Stack) -> i64 {
    test_support::query_count(&stack.main_db.url, "SELECT coalesce(max(id), 0) AS n FROM audit_log").await.unwrap()
}

#[tokio::test]
async fn every_change_writes_one_audit_row_in_its_transaction_and_a_failed_one_none() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let team: Team = team::team(&stack, "Audit Ltd").await.unwrap();
    let owner = team.owner.token.clone();
    let job = create_job(&stack, &owner, "Audited job").await;
    let cv = upload_cv(&stack, &owner, "audited").await;
    let pending = invite(&stack, &team.owner, "pending@audit.example.com", "viewer").await.unwrap();
    let body = json!({"job_id": job, "cv_id": cv});
    let application =
        call(&stack, &owner, Method::POST, "/api/v1/applications", Some(body)).await.1["id"].as_i64().unwrap();
    let interviews = format!("/api/v1/applications/{application}/interviews");
    let body = json!({"scheduled_at": "2026-12-01T09:00:00Z"});
    let interview = call(&stack, &owner, Method::POST, &interviews, Some(body)).await.1["id"].as_i64().unwrap();

    // (method, path, body, expected action) for every state-changing route.
    let changes: Vec<(Method, String, Option<Value>, &str)> = vec![
        (Method::POST, "/api/v1/jobs".into(), Some(json!({"title": "Second"})), "job.create"),
        (
            Method::PATCH,
            format!("/api/v1/applications/{application}"),
            Some(json!({"stage": "screening"})),
            "application.update",
        ),
        (Method::POST, interviews.clone(), Some(json!({"scheduled_at": "2026-12-02T09:00:00Z"})), "interview.create"),
        (Method::PATCH, format!("/api/v1/interviews/{interview}"), Some(json!({"kind": "onsite"})), "interview.update"),
        (
            Method::POST,
            format!("/api/v1/interviews/{interview}/feedback"),
            Some(json!({"rating": 3, "recommendation": "no"})),
            "interview.feedback",
        ),
        (Method::PATCH, format!("/api/v1/jobs/{job}"), Some(json!({"title": "Renamed"})), "job.update"),
        (Method::POST, format!("/api/v1/jobs/{job}/archive"), None, "job.archive"),
        (Method::DELETE, format!("/api/v1/cvs/{cv}"), None, "cv.delete"),
        (
            Method::PATCH,
            format!("/api/v1/users/{}", team.viewer.user_id),
            Some(json!({"role": "recruiter"})),
            "user.update",
        ),
        (
            Method::POST,
            "/api/v1/invitations".into(),
            Some(json!({"email": "new@audit.example.com", "role": "viewer"})),
            "invitation.create",
        ),
        (Method::POST, format!("/api/v1/invitations/{pending}/resend"), None, "invitation.resend"),
        (Method::DELETE, format!("/api/v1/invitations/{pending}"), None, "invitation.revoke"),
        (Method::POST, "/api/v1/api-keys".into(), Some(json!({"name": "audited"})), "api_key.create"),
        (Method::POST, "/api/v1/auth/logout-all".into(), None, "session.end_all"),
    ];
    for (method, path, body, action) in changes {
        let before = last_audit_id(&stack).await;
        let (status, answer) = call(&stack, &owner, method.clone(), &path, body).await;
        assert!((200..300).contains(&status), "{method} {path}: {status} {answer}");
        let rows = audit_since(&stack, team.company_id, before).await;
        assert_eq!(rows.len(), 1, "{method} {path}: {rows:?}");
        let row = &rows[0];
        assert_eq!(row.action, action);
        assert_eq!((row.actor_kind.as_str(), row.actor_user_id), ("user", Some(team.owner.user_id)));
        assert!(row.request_id.is_some() && row.user_agent.is_some(), "{row:?}");
    }
    // The role change kept its before and after.
    let (_, trail) = call(&stack, &team.admin.token, Method::GET, "/api/v1/audit?action=user.update", None).await;
    let entry = &trail["data"][0];
    assert_eq!(
        (entry["before"]["role"].as_str(), entry["after"]["role"].as_str()),
        (Some("viewer"), Some("recruiter"))
    );
    // Sign-in, sign-out, upload, acceptance, a password change: one row each too.
    for (action, run) in [("session.create", 0), ("cv.upload", 1), ("session.end", 2)] {
        let before = last_audit_id(&stack).await;
        let token =
            login(&stack, &stack.url, &team.admin.email, PASSWORD).await.json::<Value>().await.unwrap()["token"]
                .as_str()
                .unwrap()
                .to_owned();
        if run == 1 {
            upload_cv(&stack, &token, "second").await;
        } else if run == 2 {
            assert_eq!(call(&stack, &token, Method::POST, "/api/v1/auth/logout", None).await.0, 204);
        }
        let actions: Vec<String> =
            audit_since(&stack, team.company_id, before).await.into_iter().map(|r| r.action).collect();
        let expected: Vec<&str> = if run == 0 { vec![action] } else { vec!["session.create", action] };
        assert_eq!(actions, expected);
    }

    // Failed changes write nothing: invalid input, unknown ids, conflicts, refusals.
    let before = last_audit_id(&stack).await;
    let admin = login(&stack, &stack.url, &team.admin.email, PASSWORD).await.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let after_login = last_audit_id(&stack).await;
    assert_eq!(after_login, before + 1);
    let failures: Vec<(Method, String, Option<Value>, u16)> = vec![
        (Method::PATCH, format!("/api/v1/jobs/{job}"), Some(json!({"status": "bogus"})), 400),
        (Method::PATCH, "/api/v1/jobs/999999".into(), Some(json!({"title": "x"})), 404),
        (Method::DELETE, "/api/v1/cvs/999999".into(), None, 404),
        (Method::POST, "/api/v1/invitations".into(), Some(json!({"email": team.viewer.email, "role": "viewer"})), 409),
        (Method::PATCH, format!("/api/v1/users/{}", team.owner.user_id), Some(json!({"is_active": false})), 403),
        (Method::DELETE, format!("/api/v1/invitations/{pending}"), None, 409),
    ];
    for (method, path, body, expected) in failures {
        let (status, answer) = call(&stack, &admin, method.clone(), &path, body).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
    }
    assert_eq!(last_audit_id(&stack).await, after_login, "failed changes wrote audit rows");

    // Same transaction: when the audit row cannot be written, the change is undone.
    let mut conn = stack.main_db.connect().await.unwrap();
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "ALTER TABLE audit_log ADD CONSTRAINT no_job_create CHECK (action <> 'job.create') NOT VALID",
        ),
        &mut conn,
    )
    .await
    .unwrap();
    let jobs_before = test_support::query_count(&stack.main_db.url, "SELECT count(*) AS n FROM jobs").await.unwrap();
    let (status, _) = call(&stack, &admin, Method::POST, "/api/v1/jobs", Some(json!({"title": "Unaudited"}))).await;
    assert_eq!(status, 500);
    assert_eq!(
        test_support::query_count(&stack.main_db.url, "SELECT count(*) AS n FROM jobs").await.unwrap(),
        jobs_before
    );

    // Append-only, whoever asks.
    for sql in ["UPDATE audit_log SET action = 'x'", "DELETE FROM audit_log", "TRUNCATE audit_log"] {
        let err = diesel_async::RunQueryDsl::execute(diesel::sql_query(sql), &mut conn).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{sql}: {err}");
    }
    // The trail is readable, filtered and paginated, for owners and admins.
    let (status, page) = call(&stack, &admin, Method::GET, "/api/v1/audit?object_type=job&limit=2", None).await;
    assert_eq!(status, 200);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);
    assert!(page["data"].as_array().unwrap().iter().all(|r| r["object_type"] == "job"));
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) =
        call(&stack, &admin, Method::GET, &format!("/api/v1/audit?object_type=job&limit=2&cursor={cursor}"), None)
            .await;
    assert!(next["data"][0]["id"].as_i64() < page["data"][1]["id"].as_i64());
    let (status, body) = call(&stack, &admin, Method::GET, "/api/v1/audit?object_id=abc", None).await;
    assert_eq!((status, body["error"]["param"].as_str()), (400, Some("object_id")));
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn keys_hold_to_their_scopes_and_a_rotated_or_revoked_key_stops_on_every_replica() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let team = team::team(&stack, "Keys Ltd").await.unwrap();
    let (second, _spool) = stack.another_gateway().await.unwrap();
    let admin = &team.admin.token;
    let new_key = |body: Value| {
        let stack = &stack;
        async move {
            let (status, created) = call(stack, admin, Method::POST, "/api/v1/api-keys", Some(body)).await;
            assert_eq!(status, 201, "{created}");
            assert_eq!(created["key"].as_str().unwrap().len(), 43);
            (created["id"].as_i64().unwrap(), created["key"].as_str().unwrap().to_owned())
        }
    };

    // Scopes: a read-only key reads and does nothing else; an LLM-only key calls the LLM.
    let (_, reader) = new_key(json!({"name": "dashboards", "scopes": ["read"]})).await;
    assert_eq!(call(&stack, &reader, Method::GET, "/api/v1/jobs", None).await.0, 200);
    let (status, body) = call(&stack, &reader, Method::POST, "/api/v1/jobs", Some(json!({"title": "No"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("insufficient_scope")));
    assert_eq!(
        call(&stack, &reader, Method::POST, "/v1/chat/completions", Some(common::chat_body(false))).await.0,
        403
    );
    let (_, llm_only) = new_key(json!({"name": "bot", "scopes": ["llm"]})).await;
    assert_eq!(
        call(&stack, &llm_only, Method::POST, "/v1/chat/completions", Some(common::chat_body(false))).await.0,
        200
    );
    assert_eq!(call(&stack, &llm_only, Method::GET, "/api/v1/jobs", None).await.0, 403);
    // No key manages keys or people, whatever its role.
    let (_, owners) = {
        let (status, created) = call(
            &stack,
            &team.owner.token,
            Method::POST,
            "/api/v1/api-keys",
            Some(json!({"name": "owner's", "user_id": team.owner.user_id})),
        )
        .await;
        assert_eq!(status, 201);
        (created["id"].as_i64().unwrap(), created["key"].as_str().unwrap().to_owned())
    };
    let (status, body) = call(&stack, &owners, Method::POST, "/api/v1/api-keys", Some(json!({"name": "x"}))).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("insufficient_scope")));
    assert_eq!(call(&stack, &owners, Method::GET, "/api/v1/audit", None).await.0, 403);
    // Admins make no keys for owners; bad input names its field.
    let (status, _) = call(
        &stack,
        admin,
        Method::POST,
        "/api/v1/api-keys",
        Some(json!({"name": "mine now", "user_id": team.owner.user_id})),
    )
    .await;
    assert_eq!(status, 403);
    for (body, field) in [
        (json!({"name": "x", "scopes": ["admin"]}), "scopes"),
        (json!({"name": "x", "scopes": []}), "scopes"),
        (json!({"name": " "}), "name"),
        (json!({"name": "x", "user_id": 999999}), "user_id"),
        (json!({"name": "x", "company_id": 1}), "company_id"),
    ] {
        let (status, answer) = call(&stack, admin, Method::POST, "/api/v1/api-keys", Some(body)).await;
        assert_eq!((status, answer["error"]["param"].as_str()), (400, Some(field)), "{answer}");
    }

    // Rotation: the new key works, the old one stops on both replicas (both had it cached).
    let (id, old) = new_key(json!({"name": "pipeline"})).await;
    for base in [&stack.url, &second.url] {
        assert_eq!(call_at(&stack, base, &old, Method::GET, "/api/v1/jobs", None).await.0, 200);
    }
    let (status, rotated) = call(&stack, admin, Method::POST, &format!("/api/v1/api-keys/{id}/rotate"), None).await;
    assert_eq!(status, 201, "{rotated}");
    assert_eq!(
        (rotated["name"].as_str(), rotated["scopes"].clone()),
        (Some("pipeline"), json!(["read", "cvs:write", "llm"]))
    );
    let fresh = rotated["key"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(2);
    for base in [&stack.url, &second.url] {
        while call_at(&stack, base, &old, Method::GET, "/api/v1/jobs", None).await.0 != 401 {
            assert!(Instant::now() < deadline, "{base} still takes a rotated key");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(call_at(&stack, base, &fresh, Method::GET, "/api/v1/jobs", None).await.0, 200);
    }
    // Revocation, the same; a second revocation is a conflict; another company's key is not found.
    let fresh_id = rotated["id"].as_i64().unwrap();
    assert_eq!(call(&stack, admin, Method::DELETE, &format!("/api/v1/api-keys/{fresh_id}"), None).await.0, 204);
    let deadline = Instant::now() + Duration::from_secs(2);
    for base in [&stack.url, &second.url] {
        while call_at(&stack, base, &fresh, Method::GET, "/api/v1/jobs", None).await.0 != 401 {
            assert!(Instant::now() < deadline, "{base} still takes a revoked key");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(call(&stack, admin, Method::DELETE, &format!("/api/v1/api-keys/{fresh_id}"), None).await.0, 409);
    let other = team::team(&stack, "Other keys").await.unwrap();
    assert_eq!(call(&stack, &other.owner.token, Method::DELETE, &format!("/api/v1/api-keys/{id}"), None).await.0, 404);
    // The list shows prefixes and states, never a key or its digest.
    let (_, listed) = call(&stack, admin, Method::GET, "/api/v1/api-keys?limit=100", None).await;
    let text = listed.to_string();
    assert!(!text.contains(&fresh) && !text.contains(&old) && !text.contains("key_hash"));
    let revoked = listed["data"].as_array().unwrap().iter().filter(|k| !k["revoked_at"].is_null()).count();
    assert_eq!(revoked, 2);
    second.stop().await.unwrap();
    stack.stop().await.unwrap();
}

#[tokio::test]
async fn applications_move_through_stages_interviews_gather_feedback_and_llm_calls_name_only_own_interviews() {
    let stack = Stack::start(no_worker()).await.unwrap();
    let team = team::team(&stack, "Hiring Ltd").await.unwrap();
    let other = team::team(&stack, "Elsewhere Ltd").await.unwrap();
    let recruiter = team.recruiter.token.clone();
    let job = create_job(&stack, &recruiter, "Platform engineer").await;
    let cv = upload_cv(&stack, &recruiter, "grace").await;
    let their_cv = upload_cv(&stack, &other.owner.token, "theirs").await;

    // Apply: the job and the CV must be the company's; once per pair.
    let (status, app) =
        call(&stack, &recruiter, Method::POST, "/api/v1/applications", Some(json!({"job_id": job, "cv_id": cv}))).await;
    assert_eq!((status, app["stage"].as_str()), (201, Some("applied")), "{app}");
    let app_id = app["id"].as_i64().unwrap();
    let body = json!({"job_id": job, "cv_id": their_cv});
    let (status, err) = call(&stack, &recruiter, Method::POST, "/api/v1/applications", Some(body)).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("cv_id")));
    let body = json!({"job_id": job, "cv_id": cv});
    let (status, err) = call(&stack, &recruiter, Method::POST, "/api/v1/applications", Some(body)).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("already_applied")));

    // Stages; a final stage stays.
    let path = format!("/api/v1/applications/{app_id}");
    for stage in ["screening", "interview"] {
        let (status, moved) = call(&stack, &recruiter, Method::PATCH, &path, Some(json!({"stage": stage}))).await;
        assert_eq!((status, moved["stage"].as_str()), (200, Some(stage)));
    }
    let (status, err) = call(&stack, &recruiter, Method::PATCH, &path, Some(json!({"stage": "promoted"}))).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("stage")));

    // An interview with two interviewers; someone from elsewhere is refused by position.
    let interviews = format!("/api/v1/applications/{app_id}/interviews");
    let people = json!([team.recruiter.user_id, other.viewer.user_id]);
    let body = json!({"scheduled_at": "2026-12-01T10:00:00Z", "participants": people});
    let (status, err) = call(&stack, &recruiter, Method::POST, &interviews, Some(body)).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("participants[1]")), "{err}");
    let people = json!([team.recruiter.user_id, team.admin.user_id]);
    let body = json!({"scheduled_at": "2026-12-01T10:00:00Z", "kind": "technical", "participants": people});
    let (status, interview) = call(&stack, &recruiter, Method::POST, &interviews, Some(body)).await;
    assert_eq!(status, 201, "{interview}");
    let interview_id = interview["id"].as_i64().unwrap();
    let feedback = format!("/api/v1/interviews/{interview_id}/feedback");
    let body = json!({"rating": 4, "recommendation": "yes", "comments": "Solid on ownership."});
    assert_eq!(call(&stack, &recruiter, Method::POST, &feedback, Some(body)).await.0, 201);
    let body = json!({"rating": 9, "recommendation": "yes"});
    let (status, err) = call(&stack, &team.admin.token, Method::POST, &feedback, Some(body)).await;
    assert_eq!((status, err["error"]["param"].as_str()), (400, Some("rating")));
    let body = json!({"rating": 5, "recommendation": "strong_yes"});
    assert_eq!(call(&stack, &team.admin.token, Method::POST, &feedback, Some(body)).await.0, 201);
    let (_, read) =
        call(&stack, &team.viewer.token, Method::GET, &format!("/api/v1/interviews/{interview_id}"), None).await;
    assert_eq!(read["feedback"].as_array().unwrap().len(), 2);
    assert_eq!(read["participants"], json!([team.recruiter.user_id, team.admin.user_id]));
    let (status, _) =
        call(&stack, &team.viewer.token, Method::POST, &feedback, Some(json!({"rating": 1, "recommendation": "no"})))
            .await;
    assert_eq!(status, 403, "viewers read, they do not judge");
    let (status, hired) = call(&stack, &recruiter, Method::PATCH, &path, Some(json!({"stage": "hired"}))).await;
    assert_eq!((status, hired["stage"].as_str()), (200, Some("hired")));
    let (status, err) = call(&stack, &recruiter, Method::PATCH, &path, Some(json!({"stage": "rejected"}))).await;
    assert_eq!((status, err["error"]["code"].as_str()), (409, Some("final_stage")));

    // Another company sees none of it.
    for (method, path) in [
        (Method::GET, path.clone()),
        (Method::PATCH, path.clone()),
        (Method::GET, interviews.clone()),
        (Method::POST, interviews.clone()),
        (Method::GET, format!("/api/v1/interviews/{interview_id}")),
        (Method::PATCH, format!("/api/v1/interviews/{interview_id}")),
        (Method::POST, feedback.clone()),
        (Method::POST, format!("{path}/analysis")),
        (Method::GET, format!("{path}/analyses")),
    ] {
        let body = if method == Method::GET {
            None
        } else if path.ends_with("feedback") {
            Some(json!({"rating": 1, "recommendation": "no"}))
        } else if method == Method::POST {
            Some(json!({"scheduled_at": "2026-12-02T10:00:00Z"}))
        } else {
            Some(json!({"notes": "mine"}))
        };
        let body = if path.contains("/interviews/") && method == Method::PATCH {
            Some(json!({"status": "cancelled"}))
        } else {
            body
        };
        let (status, answer) = call(&stack, &other.owner.token, method.clone(), &path, body).await;
        assert_eq!(status, 404, "{method} {path}: {answer}");
    }
    let (_, listed) = call(&stack, &other.owner.token, Method::GET, "/api/v1/applications", None).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 0);

    // X-Interview-Id: the company's own interview is logged with the call; another
    // company's, or one that does not exist, is refused before any upstream call.
    let calls_before = stack.sim.requests();
    let res = stack
        .chat(&team.api_key, &common::chat_body(false))
        .header("x-interview-id", interview_id.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for id in [interview_id.to_string(), "999999".to_owned()] {
        let res =
            stack.chat(&other.api_key, &common::chat_body(false)).header("x-interview-id", id).send().await.unwrap();
        assert_eq!(res.status(), 400);
        let err: Value = res.json().await.unwrap();
        assert_eq!(
            (err["error"]["code"].as_str(), err["error"]["param"].as_str()),
            (Some("unknown_interview"), Some("x-interview-id"))
        );
    }
    assert_eq!(stack.sim.requests(), calls_before + 1);
    stack.stop().await.unwrap();
}

async fn list(stack: &Stack, token: &str, path: &str, no_cache: bool) -> (String, Value) {
    let mut req = stack.http.get(format!("{}{path}", stack.url)).bearer_auth(token);
    if no_cache {
        req = req.header("cache-control", "no-cache");
    }
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let cache = res.headers().get("x-cache").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
    (cache, res.json().await.unwrap())
}

#[tokio::test]
async fn list_pages_are_cached_per_company_and_role_and_every_change_invalidates_them() {
    let stack = Stack::start(Options { with_worker: false, with_cache: true, ..Options::default() }).await.unwrap();
    let team = team::team(&stack, "Cached Ltd").await.unwrap();
    let other = team::team(&stack, "Uncached Ltd").await.unwrap();
    let (owner, viewer) = (team.owner.token.clone(), team.viewer.token.clone());
    create_job(&stack, &owner, "First").await;

    let (first, page) = list(&stack, &owner, "/api/v1/jobs", false).await;
    let (second, again) = list(&stack, &owner, "/api/v1/jobs", false).await;
    assert_eq!((first.as_str(), second.as_str()), ("miss", "hit"));
    assert_eq!(page, again);
    // Another role, another query, another company: their own pages.
    assert_eq!(list(&stack, &viewer, "/api/v1/jobs", false).await.0, "miss");
    assert_eq!(list(&stack, &owner, "/api/v1/jobs?limit=1", false).await.0, "miss");
    let (cache, theirs) = list(&stack, &other.owner.token, "/api/v1/jobs", false).await;
    assert_eq!((cache.as_str(), theirs["data"].as_array().unwrap().len()), ("miss", 0));
    // A write is seen at once by the next read.
    create_job(&stack, &team.recruiter.token, "Second").await;
    let (cache, page) = list(&stack, &owner, "/api/v1/jobs", false).await;
    assert_eq!((cache.as_str(), page["data"].as_array().unwrap().len()), ("miss", 2));
    assert_eq!(list(&stack, &viewer, "/api/v1/jobs", false).await.1["data"].as_array().unwrap().len(), 2);
    // `Cache-Control: no-cache` reads the database.
    assert_eq!(list(&stack, &owner, "/api/v1/jobs", true).await.0, "miss");
    assert_eq!(list(&stack, &owner, "/api/v1/jobs", false).await.0, "hit");

    // CVs: cv-processor's status events invalidate too.
    let cv = upload_cv(&stack, &owner, "cached").await;
    // The upload's `queued` event is emitted after the answer, and moves the generation
    // on too: read once it has.
    let events = stack.redis.key(&format!("cv_events:{}", team.company_id));
    test_support::wait_for(Duration::from_secs(5), "the upload's queued event", || async {
        stack.redis.xlen(&events).await.ok().filter(|n| *n >= 1)
    })
    .await
    .unwrap();
    let (_, page) = list(&stack, &owner, "/api/v1/cvs", false).await;
    assert_eq!(page["data"][0]["status"], "queued");
    assert_eq!(list(&stack, &owner, "/api/v1/cvs", false).await.0, "hit");
    let mut conn = stack.main_db.connect().await.unwrap();
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(format!("UPDATE cvs SET status = 'processing' WHERE id = {cv}")),
        &mut conn,
    )
    .await
    .unwrap();
    let event = common_models::cv::CvStatusEvent {
        cv_id: common_models::ids::CvId(cv),
        company_id: common_models::ids::CompanyId(team.company_id),
        status: common_models::cv::CvStatus::Processing,
        failure_reason: None,
        file_name: "cached.txt".into(),
        at: chrono::Utc::now(),
    };
    let pool = service_kit::redis::build_pool(
        &stack.redis.url,
        1,
        service_kit::redis::ReplyTimeout::After(Duration::from_secs(1)),
    )
    .unwrap();
    common_models::cv::events::emit(&pool, &stack.redis.prefix, &common_models::cv::StatusEvent::Cv(event))
        .await
        .unwrap();
    let (cache, page) = list(&stack, &owner, "/api/v1/cvs", false).await;
    assert_eq!((cache.as_str(), page["data"][0]["status"].as_str()), ("miss", Some("processing")));

    // Applications too.
    let job = create_job(&stack, &owner, "Third").await;
    assert_eq!(list(&stack, &owner, "/api/v1/applications", false).await.0, "miss");
    assert_eq!(list(&stack, &owner, "/api/v1/applications", false).await.0, "hit");
    let (status, _) =
        call(&stack, &owner, Method::POST, "/api/v1/applications", Some(json!({"job_id": job, "cv_id": cv}))).await;
    assert_eq!(status, 201);
    let (cache, page) = list(&stack, &owner, "/api/v1/applications", false).await;
    assert_eq!((cache.as_str(), page["data"].as_array().unwrap().len()), ("miss", 1));
    let metrics = stack.metrics().await.unwrap();
    assert!(common::metric_sum(&metrics, "headhunter_gateway_api_cache_total{result=\"hit\"}") >= 4.0);
    stack.stop().await.unwrap();
}
