//! Which check a token gets, and the cache of online answers.
//!
//! - `local`: the token must be an EdDSA JWT signed by one of MCIAS's keys
//!   (`jwt.rs`, `keys.rs`). No call to MCIAS per request, so tokens verify
//!   while MCIAS is down; without any key, requests are `UNAVAILABLE`.
//! - `online`: MCIAS's validation endpoint answers for every token not in
//!   the cache.
//! - `auto` (the default): local while a key is held, so a token that is not
//!   a JWT, or a JWT that fails any check, is refused without asking MCIAS
//!   (its tokens are JWTs). Only when no key could be fetched does a token
//!   go online.
//!
//! Online answers are cached by the token's SHA-256 (never the token):
//! valid for at most [`POSITIVE_TTL`] or until the token expires, invalid
//! for [`NEGATIVE_TTL`]. Concurrent asks for one token share one call, and
//! at most [`MAX_ONLINE_CALLS`] calls run at once; beyond that a request is
//! refused as unavailable, so a flood of random tokens is not a flood of
//! calls to MCIAS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::jwt::{self, JwtError};
use super::keys::{KeyStore, PublicKey, MIN_REFRESH_INTERVAL};
use super::{McIasClient, McIasError, Online};

/// Longest an online "valid" is trusted without asking again.
pub const POSITIVE_TTL: Duration = Duration::from_secs(30);
/// How long an online "invalid" is remembered.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// Online validations running at once, at most.
pub const MAX_ONLINE_CALLS: usize = 32;
/// Cached answers, at most.
const CACHE_ENTRIES: u64 = 10_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum VerifyMode {
    /// Verify the JWT's EdDSA signature with MCIAS's published key; never ask MCIAS per token.
    Local,
    /// Ask MCIAS's validation endpoint (answers cached for at most 30 s).
    Online,
    /// Local while a key is held; online only when no key could be fetched.
    Auto,
}

impl VerifyMode {
    fn uses_keys(self) -> bool {
        self != VerifyMode::Online
    }
}

/// Who a valid token says its bearer is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// MCIAS's account id (`sub`).
    pub subject: String,
    pub username: Option<String>,
    pub roles: Vec<String>,
    /// Unix seconds; `None` when MCIAS did not say.
    pub expires_at: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The token is not valid (`UNAUTHENTICATED`).
    #[error("{0}")]
    Invalid(String),
    /// It could not be checked (`UNAVAILABLE`).
    #[error("{0}")]
    Unavailable(String),
}

#[derive(Clone)]
enum Answer {
    Valid(Verified),
    Invalid(String),
}

/// Each cached answer's lifetime, decided when it is stored.
struct Lifetime;

impl moka::Expiry<[u8; 32], Answer> for Lifetime {
    fn expire_after_create(&self, _: &[u8; 32], answer: &Answer, _: Instant) -> Option<Duration> {
        Some(match answer {
            Answer::Invalid(_) => NEGATIVE_TTL,
            Answer::Valid(v) => match v.expires_at {
                None => POSITIVE_TTL,
                Some(secs) => {
                    let left_ms = secs.saturating_mul(1000) - crate::registry::now_ms();
                    POSITIVE_TTL.min(Duration::from_millis(left_ms.max(0) as u64))
                }
            },
        })
    }
}

pub struct Verifier {
    client: McIasClient,
    mode: VerifyMode,
    issuer: Option<String>,
    keys: Arc<KeyStore>,
    answers: moka::future::Cache<[u8; 32], Answer>,
    online_slots: Arc<tokio::sync::Semaphore>,
}

/// What local verification made of a token.
enum Local {
    Verified(Verified),
    Refused(String),
    NotAJwt,
    /// No key to check it with (and why).
    NoKey(String),
}

impl Verifier {
    /// `issuer`: the `iss` locally verified tokens must carry, if given.
    pub fn new(client: McIasClient, mode: VerifyMode, issuer: Option<String>) -> Self {
        Verifier {
            keys: Arc::new(KeyStore::new(client.clone())),
            client,
            mode,
            issuer,
            answers: moka::future::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .expire_after(Lifetime)
                .build(),
            online_slots: Arc::new(tokio::sync::Semaphore::new(MAX_ONLINE_CALLS)),
        }
    }

    pub fn mode(&self) -> VerifyMode {
        self.mode
    }

    /// The key refresh schedule, to spawn on the server's runtime (nothing
    /// to do in online mode).
    pub fn key_refresh(&self) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        self.mode
            .uses_keys()
            .then(|| self.keys.clone().refresh_forever())
    }

    pub async fn verify(&self, token: &str) -> Result<Verified, VerifyError> {
        match self.mode {
            VerifyMode::Online => self.online(token).await,
            VerifyMode::Local => match self.local(token).await {
                Local::Verified(v) => Ok(v),
                Local::Refused(m) => Err(VerifyError::Invalid(m)),
                Local::NotAJwt => Err(VerifyError::Invalid("malformed token (not a JWT)".into())),
                Local::NoKey(why) => Err(VerifyError::Unavailable(format!(
                    "no MCIAS signing key to verify tokens with: {why}"
                ))),
            },
            VerifyMode::Auto => match self.local(token).await {
                Local::Verified(v) => Ok(v),
                Local::Refused(m) => Err(VerifyError::Invalid(m)),
                Local::NotAJwt if !self.keys.keys().is_empty() => {
                    Err(VerifyError::Invalid("malformed token (not a JWT)".into()))
                }
                Local::NotAJwt | Local::NoKey(_) => self.online(token).await,
            },
        }
    }

    async fn local(&self, token: &str) -> Local {
        let jwt = match jwt::parse(token) {
            Ok(jwt) => jwt,
            Err(JwtError::NotAJwt) => return Local::NotAJwt,
            Err(JwtError::Refused(m)) => return Local::Refused(m),
        };
        let mut keys = self.keys.keys();
        if keys.is_empty() {
            self.keys.refresh_if_due(MIN_REFRESH_INTERVAL).await;
            keys = self.keys.keys();
            if keys.is_empty() {
                let why = self
                    .keys
                    .last_error()
                    .unwrap_or_else(|| "none fetched yet".into());
                return Local::NoKey(why);
            }
        }
        let mut signed = signed_by(&jwt, &keys);
        // A key not known by its kid may be a new one: fetch the set again
        // (rate limited) before refusing.
        let known_kid = jwt.kid.is_some() && keys.iter().any(|k| k.kid == jwt.kid);
        if signed.is_none() && !known_kid {
            self.keys.refresh_if_due(MIN_REFRESH_INTERVAL).await;
            keys = self.keys.keys();
            signed = signed_by(&jwt, &keys);
        }
        if signed.is_none() {
            let candidates = keys
                .iter()
                .any(|k| k.kid.is_none() || jwt.kid.is_none() || k.kid == jwt.kid);
            return Local::Refused(
                if candidates {
                    "token signature does not verify"
                } else {
                    "token signed by a key MCIAS does not publish (unknown kid)"
                }
                .into(),
            );
        }
        match jwt.claims(super::now_secs(), self.issuer.as_deref()) {
            Ok(v) => Local::Verified(v),
            Err(JwtError::Refused(m)) => Local::Refused(m),
            Err(JwtError::NotAJwt) => Local::Refused("malformed token".into()),
        }
    }

    async fn online(&self, token: &str) -> Result<Verified, VerifyError> {
        use sha2::Digest;
        let key: [u8; 32] = sha2::Sha256::digest(token.as_bytes()).into();
        let answer = self
            .answers
            .try_get_with(key, self.ask(token))
            .await
            .map_err(|e| (*e).clone())?;
        match answer {
            Answer::Valid(v) if v.expires_at.is_none_or(|t| t > super::now_secs()) => Ok(v),
            Answer::Valid(_) => Err(VerifyError::Invalid("token expired".into())),
            Answer::Invalid(m) => Err(VerifyError::Invalid(m)),
        }
    }

    /// One call to MCIAS, if a slot is free. Errors are not cached.
    async fn ask(&self, token: &str) -> Result<Answer, VerifyError> {
        let Ok(_slot) = self.online_slots.clone().try_acquire_owned() else {
            return Err(VerifyError::Unavailable(format!(
                "too many token validations in flight ({MAX_ONLINE_CALLS}); try again"
            )));
        };
        match self.client.validate(token).await {
            Ok(Online::Valid(v)) if v.expires_at.is_some_and(|t| t <= super::now_secs()) => {
                Ok(Answer::Invalid("token expired".into()))
            }
            Ok(Online::Valid(v)) => Ok(Answer::Valid(v)),
            Ok(Online::Invalid(m)) => Ok(Answer::Invalid(m)),
            Err(McIasError::Unavailable(m) | McIasError::Config(m)) => Err(
                VerifyError::Unavailable(format!("identity service unavailable: {m}")),
            ),
        }
    }
}

/// The key in `keys` that signed `jwt`: one of its `kid`, or one without a
/// `kid` (tried for any token).
fn signed_by<'k>(jwt: &jwt::Jwt<'_>, keys: &'k [PublicKey]) -> Option<&'k PublicKey> {
    keys.iter()
        .filter(|k| k.kid.is_none() || jwt.kid.is_none() || k.kid == jwt.kid)
        .find(|k| jwt.signed_by(k))
}
