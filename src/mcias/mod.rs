//! A client of MCIAS, the platform's identity service, over HTTPS with a
//! configured CA (the system's roots are not trusted). The agent verifies
//! bearer tokens with it (`verifier.rs`); `mcp login` obtains one
//! (`login.rs`).
//!
//! One file per job: `jwt.rs` parses and verifies a token locally, `keys.rs`
//! holds MCIAS's public keys (fetched, cached, refreshed), `online.rs` reads
//! the answers of the validation endpoint, `verifier.rs` decides which of the
//! two a token gets and caches online answers, `login.rs` is the login
//! request and its answers.
//!
//! # What is known
//!
//! Tokens are JWTs signed with Ed25519 (`alg: EdDSA`) with the claims `sub`
//! (account id), `roles` (strings), `iss`, `iat`, `exp`, `jti`. Services may
//! verify them offline with MCIAS's public key (a JWK `{"kty": "OKP", "crv":
//! "Ed25519", "x": ...}`) or online at `/v1/token/validate`, whose answer has
//! `valid`, `sub`, `roles`, `expires_at` and, in newer versions, `username`.
//! Login is `POST /v1/auth/login`: 401 for bad credentials, 403 when a policy
//! refuses the login; services send their `service_name` and tags; accounts
//! may need TOTP. Validations may be cached by the token's SHA-256 for at
//! most 30 s.
//!
//! # Assumptions, and what the code does when they are wrong
//!
//! Nothing below could be confirmed from public material. Each has a
//! fallback, so a wrong guess costs a feature, never a wrongly accepted token.
//!
//! 1. **Where the public key is.** `GET <base>/v1/keys` (`--mcias-keys-path`).
//!    Fallback: when no key can be fetched, `--mcias-verify auto` (the
//!    default) validates online; `local` refuses with `UNAVAILABLE`.
//! 2. **One JWK or a JWKS.** Both are read: `{"keys": [...]}` or a single
//!    JWK. Keys that are not `OKP`/`Ed25519`, or say `use` other than `sig`
//!    or `alg` other than `EdDSA`, are skipped.
//! 3. **Key ids.** A token's `kid` picks the key of that `kid`; keys without
//!    a `kid` are tried for any token. A `kid` not in the set refreshes the
//!    set (at most once per 30 s); still unknown, the token is refused.
//! 4. **The username in a JWT.** Not among the documented claims; a
//!    `username` claim is used when present, so with local verification an
//!    account is otherwise known by its subject (which `[auth]` accepts in
//!    `operate_accounts`/`read_accounts` too).
//! 5. **The token goes in the body** of the validation request, as
//!    `{"token": "..."}` (never in a URL or a header that a proxy might log).
//!    Fallback: none; an MCIAS that wants it elsewhere answers 4xx, and the
//!    token is refused (use local verification).
//! 6. **An invalid token** may be answered with 401, with 404, or with 200 and
//!    `valid: false`: all three mean invalid (`UNAUTHENTICATED`). A 200 without
//!    `valid: true` is invalid. Any other status, 5xx or no answer means MCIAS
//!    is unavailable (`UNAVAILABLE`), never a valid token.
//! 7. **The answer's fields.** The subject is `sub`, else `subject`; a valid
//!    answer without either is unusable (`UNAVAILABLE`). `username` is
//!    optional. `roles` missing means none.
//! 8. **`expires_at`** is unix seconds as a number or a numeric string, or an
//!    RFC 3339 time; all are read. Missing, the answer is trusted for the
//!    cache's 30 s only. In the past, the token is refused as expired.
//! 9. **Login** is `POST <base>/v1/auth/login` with `{"username",
//!    "password", "service_name", "tags"}` (tags omitted when empty) and
//!    answers `{"token", "expires_at"}`; without `expires_at`, the expiry is
//!    read from the token's `exp` (unverified, for display only).
//! 10. **TOTP.** An account that needs a code is told by a 401 or 403 whose
//!     JSON body has `"totp_required": true`, or `error`/`code` equal to
//!     `"totp_required"`; the CLI then asks for the code and sends the same
//!     request with `"totp_code"`. Fallback: an MCIAS that says it otherwise
//!     gives a 401 (reported as bad credentials) or 403 (with its reason).
//! 11. **A 403's reason** is the body's `error`, `message` or `reason`
//!     string, when there is one.
//! 12. **Clocks.** `exp` is checked without leeway (a token is refused from
//!     its expiry on); `nbf` with 30 s of leeway for a clock behind MCIAS's.
//!     `aud` is not checked: the platform's tokens are not documented to
//!     carry one. `iss` is checked when `--mcias-issuer` is given.
//!
//! Tokens and passwords go only in request bodies, never in URLs, so no
//! error message (which may carry the URL) contains them.

mod jwt;
mod keys;
mod login;
mod online;
mod verifier;

use std::path::Path;
use std::time::Duration;

pub use jwt::unverified_expiry;
pub use login::{LoginOutcome, LoginRequest};
pub use online::Online;
pub use verifier::{Verified, Verifier, VerifyError, VerifyMode};

pub const DEFAULT_VALIDATE_PATH: &str = "/v1/token/validate";
pub const DEFAULT_LOGIN_PATH: &str = "/v1/auth/login";
/// An assumption (see the module doc): nothing public says where the key is.
pub const DEFAULT_KEYS_PATH: &str = "/v1/keys";
/// MCIAS must answer within this, or the request is refused as unavailable.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest answer read from MCIAS (keys, validations, logins are small).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;

#[derive(Debug, Clone, thiserror::Error)]
pub enum McIasError {
    /// MCIAS could not be asked or gave no usable answer.
    #[error("identity service unavailable: {0}")]
    Unavailable(String),
    #[error("identity service configuration: {0}")]
    Config(String),
}

/// The paths of MCIAS's endpoints, below its base URL.
#[derive(Debug, Clone)]
pub struct Endpoints {
    pub validate: String,
    pub login: String,
    pub keys: String,
}

impl Default for Endpoints {
    fn default() -> Self {
        Endpoints {
            validate: DEFAULT_VALIDATE_PATH.to_string(),
            login: DEFAULT_LOGIN_PATH.to_string(),
            keys: DEFAULT_KEYS_PATH.to_string(),
        }
    }
}

#[derive(Clone)]
pub struct McIasClient {
    base: String,
    http: reqwest::Client,
    endpoints: Endpoints,
}

impl McIasClient {
    /// `base` is `https://host:port`; `ca` the PEM file of the CA that
    /// signed MCIAS's certificate (the system's roots are not trusted).
    pub fn new(base: &str, ca: &Path, endpoints: Endpoints) -> Result<Self, McIasError> {
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
            endpoints,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// MCIAS's public signing keys (`keys.rs` reads them).
    pub(crate) async fn fetch_keys(&self) -> Result<Vec<keys::PublicKey>, McIasError> {
        let url = self.url(&self.endpoints.keys);
        let answer = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| McIasError::Unavailable(describe(&e)))?;
        let status = answer.status();
        if !status.is_success() {
            return Err(McIasError::Unavailable(format!("{url} answered {status}")));
        }
        let body = read_body(answer).await?;
        keys::parse_key_set(&body)
            .map_err(|e| McIasError::Unavailable(format!("{url}: unusable keys: {e}")))
    }

    /// Asks MCIAS whether `token` is valid (the token in the body).
    pub async fn validate(&self, token: &str) -> Result<Online, McIasError> {
        let url = self.url(&self.endpoints.validate);
        let answer = self
            .http
            .post(&url)
            .json(&serde_json::json!({ "token": token }))
            .send()
            .await
            .map_err(|e| McIasError::Unavailable(describe(&e)))?;
        match answer.status() {
            s if s.is_success() => {
                let body = read_body(answer).await?;
                online::parse_answer(&body)
                    .map_err(|e| McIasError::Unavailable(format!("{url}: unusable answer: {e}")))
            }
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::NOT_FOUND => {
                Ok(Online::Invalid("invalid token".into()))
            }
            s => Err(McIasError::Unavailable(format!("{url} answered {s}"))),
        }
    }

    /// One login attempt; the caller asks for a TOTP code when told to.
    pub async fn login(&self, request: &LoginRequest<'_>) -> Result<LoginOutcome, McIasError> {
        let url = self.url(&self.endpoints.login);
        let answer = self
            .http
            .post(&url)
            .json(request)
            .send()
            .await
            .map_err(|e| McIasError::Unavailable(describe(&e)))?;
        let status = answer.status().as_u16();
        let body = read_body(answer).await?;
        login::read_answer(status, &body)
            .map_err(|e| McIasError::Unavailable(format!("{url}: {e}")))
    }
}

/// The body of an answer, refused beyond [`MAX_ANSWER_BYTES`].
async fn read_body(answer: reqwest::Response) -> Result<Vec<u8>, McIasError> {
    if answer
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Err(McIasError::Unavailable("answer too large".into()));
    }
    let body = answer
        .bytes()
        .await
        .map_err(|e| McIasError::Unavailable(format!("unreadable answer: {}", describe(&e))))?;
    if body.len() > MAX_ANSWER_BYTES {
        return Err(McIasError::Unavailable("answer too large".into()));
    }
    Ok(body.to_vec())
}

/// A time as MCIAS may send it: unix seconds as a number or a numeric
/// string, or an RFC 3339 time. `None` for null; an error for anything else.
pub(crate) fn parse_time(value: &serde_json::Value) -> Result<Option<i64>, String> {
    use serde_json::Value;
    match value {
        Value::Null => Ok(None),
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .map(Some)
            .ok_or_else(|| format!("time {n} out of range")),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(secs) = s.parse::<i64>() {
                return Ok(Some(secs));
            }
            time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
                .map(|t| Some(t.unix_timestamp()))
                .map_err(|_| "time is neither unix seconds nor RFC 3339".to_string())
        }
        _ => Err("time is neither a number nor a string".into()),
    }
}

/// Unix seconds now.
pub(crate) fn now_secs() -> i64 {
    crate::registry::now_ms().div_euclid(1000)
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn times_in_every_encoding() {
        assert_eq!(parse_time(&json!(1700000000)), Ok(Some(1700000000)));
        assert_eq!(parse_time(&json!(1700000000.7)), Ok(Some(1700000000)));
        assert_eq!(parse_time(&json!("1700000000")), Ok(Some(1700000000)));
        assert_eq!(
            parse_time(&json!("2023-11-14T22:13:20Z")),
            Ok(Some(1700000000))
        );
        assert_eq!(
            parse_time(&json!("2023-11-14T23:13:20+01:00")),
            Ok(Some(1700000000))
        );
        assert_eq!(parse_time(&json!(null)), Ok(None));
        assert!(parse_time(&json!("tomorrow")).is_err());
        assert!(parse_time(&json!([1])).is_err());
    }
}
