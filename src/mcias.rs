//! A client of MCIAS, the platform's identity service, over HTTPS with a
//! configured CA. The agent validates bearer tokens with it; `mcp login`
//! obtains one.
//!
//! The API as MCP uses it (paths configurable):
//! - `POST <base><validate_path>` with `{"token": "..."}` answers
//!   `{"valid": bool, "subject": "...", "roles": ["..."], "expires_at": <unix seconds>}`;
//!   a 401 or 404 means the token is not valid.
//! - `POST <base><login_path>` with `{"username": "...", "password": "..."}`
//!   answers `{"token": "...", "expires_at": <unix seconds>}`; 401 means bad
//!   credentials.
//!
//! Tokens and passwords go only in request bodies, never in URLs, so no
//! error message (which may carry the URL) contains them.

use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub const DEFAULT_VALIDATE_PATH: &str = "/v1/token/validate";
pub const DEFAULT_LOGIN_PATH: &str = "/v1/auth/login";
/// MCIAS must answer within this, or the request is refused as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error)]
pub enum McIasError {
    /// MCIAS could not be asked or gave no usable answer.
    #[error("identity service unavailable: {0}")]
    Unavailable(String),
    /// MCIAS said no (bad credentials at login).
    #[error("{0}")]
    Refused(String),
    #[error("identity service configuration: {0}")]
    Config(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validation {
    pub valid: bool,
    #[serde(default)]
    pub subject: String,
    #[serde(default)]
    pub roles: Vec<String>,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginAnswer {
    pub token: String,
    #[serde(default)]
    pub expires_at: i64,
}

#[derive(Clone)]
pub struct McIasClient {
    base: String,
    http: reqwest::Client,
    validate_path: String,
    login_path: String,
}

impl McIasClient {
    /// `base` is `https://host:port`; `ca` the PEM file of the CA that
    /// signed MCIAS's certificate (the system's roots are not trusted).
    pub fn new(
        base: &str,
        ca: &Path,
        validate_path: &str,
        login_path: &str,
    ) -> Result<Self, McIasError> {
        if !base.starts_with("https://") {
            return Err(McIasError::Config(format!(
                "the identity service URL must be https://, not {base:?}"
            )));
        }
        let pem = std::fs::read(ca)
            .map_err(|e| McIasError::Config(format!("cannot read CA {}: {e}", ca.display())))?;
        let ca = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| McIasError::Config(format!("CA {}: {e}", ca.display())))?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca)
            .https_only(true)
            .timeout(REQUEST_TIMEOUT)
            .build()
            .map_err(|e| McIasError::Config(e.to_string()))?;
        Ok(McIasClient {
            base: base.trim_end_matches('/').to_string(),
            http,
            validate_path: validate_path.to_string(),
            login_path: login_path.to_string(),
        })
    }

    pub async fn validate(&self, token: &str) -> Result<Validation, McIasError> {
        let url = format!("{}{}", self.base, self.validate_path);
        let answer = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .map_err(|e| McIasError::Unavailable(describe(&e)))?;
        match answer.status() {
            s if s.is_success() => answer.json::<Validation>().await.map_err(|e| {
                McIasError::Unavailable(format!("unreadable answer: {}", describe(&e)))
            }),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::NOT_FOUND => Ok(Validation {
                valid: false,
                subject: String::new(),
                roles: Vec::new(),
                expires_at: 0,
            }),
            s => Err(McIasError::Unavailable(format!("{url} answered {s}"))),
        }
    }

    pub async fn login(&self, username: &str, password: &str) -> Result<LoginAnswer, McIasError> {
        let url = format!("{}{}", self.base, self.login_path);
        let answer = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "username": username, "password": password }))
            .send()
            .await
            .map_err(|e| McIasError::Unavailable(describe(&e)))?;
        match answer.status() {
            s if s.is_success() => answer.json::<LoginAnswer>().await.map_err(|e| {
                McIasError::Unavailable(format!("unreadable answer: {}", describe(&e)))
            }),
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => Err(
                McIasError::Refused("login refused: bad username or password".into()),
            ),
            s => Err(McIasError::Unavailable(format!("{url} answered {s}"))),
        }
    }
}

/// A reqwest error with its causes, which name the real problem
/// (connection refused, unknown issuer, ...).
fn describe(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
