//! Who may see the dashboard. Every request but the login form must carry
//! a token — `Authorization: Bearer <token>` — or the cookie the login form
//! sets; anything else gets 401 and nothing else. The cluster's join token
//! (or its secret) makes an admin, who may also stop jobs; the dashboard
//! token printed at start makes a viewer, who may only look; a person's own
//! token (`prism user add`) makes them themselves: the dashboard reads the
//! head through their own connection, so the head decides what they see
//! and may do, and a revoked token fails on the next request of an open
//! session. No token is ever written into a page or an API answer.

use axum::extract::{Form, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Redirect, Response};
use prism::token::{JoinToken, UserToken};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The name of the session cookie.
pub const COOKIE: &str = "prism_session";
/// How long a login lasts.
const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What a caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Look.
    Viewer,
    /// Look and stop jobs.
    Admin,
    /// What the head lets this user do.
    User(Arc<UserToken>),
}

impl Role {
    /// The user's token, when a person logged in as themselves.
    pub fn user(&self) -> Option<&UserToken> {
        match self {
            Role::User(t) => Some(t),
            _ => None,
        }
    }
}

/// The tokens and the logged-in sessions.
#[derive(Debug)]
pub struct Auth {
    admin_secret: String,
    fingerprint: String,
    viewer_token: String,
    /// Checks users' tokens at login (the head's answer).
    source: Option<Arc<crate::source::Source>>,
    sessions: Mutex<HashMap<String, (Role, Instant)>>,
}

/// Compares in constant time.
fn same(a: &str, b: &str) -> bool {
    prism::token::same_bytes(a.as_bytes(), b.as_bytes())
}

impl Auth {
    /// Admins present the join token (or its secret); viewers
    /// `viewer_token`; users their own token for this CA (`fingerprint`),
    /// checked with the head through `source` at login.
    pub fn new(
        join: &JoinToken,
        viewer_token: &str,
        source: Option<Arc<crate::source::Source>>,
    ) -> Auth {
        Auth {
            admin_secret: join.secret.clone(),
            fingerprint: join.ca_fingerprint.clone(),
            viewer_token: viewer_token.to_string(),
            source,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// At login: a user's token must be one the head accepts.
    async fn check(&self, role: &Role) -> Result<(), String> {
        let (Some(_), Some(source)) = (role.user(), &self.source) else {
            return Ok(());
        };
        let req =
            prism::proto::head::HeadRequest::Access(prism::proto::access::AccessRequest::WhoAmI);
        source
            .view(role)
            .request(&req)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    /// The role a presented token grants.
    pub fn role_of_token(&self, token: &str) -> Option<Role> {
        let token = token.trim();
        if let Ok(user) = token.parse::<UserToken>() {
            return (same(&user.key.ca_fingerprint, &self.fingerprint))
                .then(|| Role::User(Arc::new(user)));
        }
        let secret = token.split_once('.').map_or(token, |(s, _)| s);
        if !self.admin_secret.is_empty() && same(secret, &self.admin_secret) {
            Some(Role::Admin)
        } else if !self.viewer_token.is_empty() && same(token, &self.viewer_token) {
            Some(Role::Viewer)
        } else {
            None
        }
    }

    fn new_session(&self, role: Role) -> String {
        let id: [u8; 24] = rand::random();
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, (_, at)| at.elapsed() < SESSION_TTL);
        s.insert(id.clone(), (role, Instant::now()));
        id
    }

    fn role_of_session(&self, id: &str) -> Option<Role> {
        let s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.iter()
            .find(|(k, (_, at))| same(k, id) && at.elapsed() < SESSION_TTL)
            .map(|(_, (role, _))| role.clone())
    }

    /// The caller's role from its headers: a bearer token or the cookie.
    pub fn role(&self, headers: &HeaderMap) -> Option<Role> {
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            if let Some(t) = v.strip_prefix("Bearer ") {
                return self.role_of_token(t);
            }
        }
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == COOKIE)
            .and_then(|(_, v)| self.role_of_session(v))
    }
}

/// Refuses every unauthenticated request (the login form excepted) and
/// hands the caller's role to the handlers.
pub async fn require(State(auth): State<Arc<Auth>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/login" || path == "/static/style.css" {
        return next.run(req).await;
    }
    match auth.role(req.headers()) {
        Some(role) => {
            req.extensions_mut().insert(role);
            next.run(req).await
        }
        None if path.starts_with("/api/") || path == "/metrics" => (
            StatusCode::UNAUTHORIZED,
            [(header::WWW_AUTHENTICATE, "Bearer")],
            axum::Json(serde_json::json!({
                "error": "unauthorized: send Authorization: Bearer <dashboard or cluster token>"
            })),
        )
            .into_response(),
        None => {
            let next = req.uri().path_and_query().map(|p| p.to_string());
            (StatusCode::UNAUTHORIZED, login_page(None, next.as_deref())).into_response()
        }
    }
}

/// The login form's fields (or the query of a login link).
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: Option<String>,
    next: Option<String>,
}

/// A path on this site to go to after logging in (never another site).
fn local_path(next: Option<&str>) -> String {
    match next {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p.into(),
        _ => "/".into(),
    }
}

fn login_page(error: Option<&str>, next: Option<&str>) -> Html<String> {
    let error = error
        .map(|e| format!("<p class=\"error\">{}</p>", crate::pages::escape(e)))
        .unwrap_or_default();
    Html(format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>Prism — log in</title>
<link rel="stylesheet" href="/static/style.css"></head><body class="login">
<form method="post" action="/login"><h1>Prism</h1>
<p>Paste the dashboard token printed by <code>prism start --head</code> (or the cluster token).</p>
{error}<input type="password" name="token" autofocus placeholder="token">
<input type="hidden" name="next" value="{next}"><button type="submit">Log in</button></form></body></html>"#,
        next = crate::pages::escape(&local_path(next)),
    ))
}

fn logged_in(auth: &Auth, role: Role, next: Option<&str>) -> Response {
    let id = auth.new_session(role);
    let cookie = format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    (
        [(header::SET_COOKIE, cookie)],
        Redirect::to(&local_path(next)),
    )
        .into_response()
}

/// `GET /login`: the form; with `?token=` a login link (sets the cookie).
pub async fn login_get(State(auth): State<Arc<Auth>>, Query(q): Query<LoginForm>) -> Response {
    match q.token.as_deref() {
        None => login_page(None, q.next.as_deref()).into_response(),
        Some(t) => log_in(&auth, t, q.next.as_deref()).await,
    }
}

/// `POST /login`: checks the token, sets the session cookie.
pub async fn login_post(State(auth): State<Arc<Auth>>, Form(f): Form<LoginForm>) -> Response {
    log_in(&auth, f.token.as_deref().unwrap_or(""), f.next.as_deref()).await
}

async fn log_in(auth: &Auth, token: &str, next: Option<&str>) -> Response {
    let refused =
        |why: &str| (StatusCode::UNAUTHORIZED, login_page(Some(why), next)).into_response();
    match auth.role_of_token(token) {
        Some(role) => match auth.check(&role).await {
            Ok(()) => logged_in(auth, role, next),
            Err(why) => refused(&why),
        },
        None => refused("That token is not valid."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_grant_roles_and_nothing_else_does() {
        let join = format!("{}.{}", "aa".repeat(16), "bb".repeat(16));
        let a = Auth::new(&join.parse().unwrap(), "viewer-token", None);
        assert_eq!(a.role_of_token(&join), Some(Role::Admin));
        assert_eq!(a.role_of_token(&"aa".repeat(16)), Some(Role::Admin));
        assert_eq!(a.role_of_token("viewer-token"), Some(Role::Viewer));
        assert_eq!(a.role_of_token("viewer-tokeN"), None);
        assert_eq!(a.role_of_token(""), None);
        let alice = format!("alice@{}.{}", "cc".repeat(16), "bb".repeat(16));
        assert!(matches!(a.role_of_token(&alice), Some(Role::User(u)) if u.name == "alice"));
        let elsewhere = format!("alice@{}.{}", "cc".repeat(16), "dd".repeat(16));
        assert_eq!(a.role_of_token(&elsewhere), None, "another cluster's user");
    }

    #[test]
    fn a_session_cookie_carries_its_role() {
        let join = format!("{}.{}", "aa".repeat(16), "bb".repeat(16));
        let a = Auth::new(&join.parse().unwrap(), "v", None);
        let id = a.new_session(Role::Viewer);
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("x=1; {COOKIE}={id}").parse().unwrap(),
        );
        assert_eq!(a.role(&h), Some(Role::Viewer));
        h.insert(header::COOKIE, format!("{COOKIE}=forged").parse().unwrap());
        assert_eq!(a.role(&h), None);
    }

    #[test]
    fn login_redirects_stay_on_this_site() {
        assert_eq!(local_path(Some("/actors")), "/actors");
        assert_eq!(local_path(Some("//evil.example")), "/");
        assert_eq!(local_path(Some("https://evil.example")), "/");
        assert_eq!(local_path(None), "/");
    }
}
