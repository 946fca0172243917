//! Authentication of every RPC but the standard health check: one tower layer
//! in front of the services, with a pluggable validator for bearer tokens,
//! then authorization by the table in authz.rs. Tokens are never logged;
//! errors say what was wrong, not what was sent.

use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures::future::BoxFuture;
use subtle::ConstantTimeEq;
use tonic::Status;

use super::authz::{self, Level, Policy};

/// The caller's bearer token, for a registry that takes it as a password
/// (`use_caller_token`); never shown.
#[derive(Clone)]
pub struct BearerToken(pub std::sync::Arc<str>);

impl std::fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BearerToken(hidden)")
    }
}

/// Who made a request, as the validator established it; attached to the
/// request (its extensions) for the services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// MCIAS's account id (`local-operator` in local mode).
    pub subject: String,
    pub username: Option<String>,
    pub roles: Vec<String>,
    /// Unix seconds; `None`: never, or not known.
    pub expires_at: Option<i64>,
    /// What the agent's policy grants; `None`: nothing.
    pub level: Option<Level>,
}

impl Identity {
    /// The name to show and record: the username, else the subject.
    pub fn name(&self) -> &str {
        self.username.as_deref().unwrap_or(&self.subject)
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AuthError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    Unavailable(String),
}

impl From<AuthError> for Status {
    fn from(e: AuthError) -> Status {
        match e {
            AuthError::Unauthenticated(m) => Status::unauthenticated(m),
            AuthError::PermissionDenied(m) => Status::permission_denied(m),
            AuthError::Unavailable(m) => Status::unavailable(m),
        }
    }
}

#[async_trait]
pub trait TokenValidator: Send + Sync + 'static {
    async fn validate(&self, token: &str) -> Result<Identity, AuthError>;
}

/// Local mode: one random token, created at first start and kept in a file
/// with mode 0600. For a single machine; a fleet uses MCIAS.
pub struct LocalTokenValidator {
    token: String,
}

/// Bytes of randomness in a local token (hex-encoded, 64 characters).
const LOCAL_TOKEN_BYTES: usize = 32;

impl LocalTokenValidator {
    /// Reads the token at `path`, creating it on first use; refuses one
    /// that group or others may read.
    pub fn load_or_create(path: &Path) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        if path.exists() {
            super::tls::check_private(path, "the token file")?;
        } else {
            let mut bytes = [0u8; LOCAL_TOKEN_BYTES];
            getrandom::fill(&mut bytes)
                .map_err(|e| anyhow::anyhow!("no randomness for the local token: {e}"))?;
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
            }
            super::tls::write_private(path, hex::encode(bytes).as_bytes(), 0o600)?;
        }
        let token = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the local token {}", path.display()))?
            .trim()
            .to_string();
        anyhow::ensure!(
            token.len() >= 32,
            "the local token in {} is too short: delete the file to create a new one",
            path.display()
        );
        Ok(LocalTokenValidator { token })
    }
}

#[async_trait]
impl TokenValidator for LocalTokenValidator {
    async fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        if bool::from(token.as_bytes().ct_eq(self.token.as_bytes())) {
            Ok(Identity {
                subject: "local-operator".to_string(),
                username: None,
                roles: Vec::new(),
                expires_at: None,
                level: Some(Level::Operate),
            })
        } else {
            Err(AuthError::Unauthenticated("invalid token".to_string()))
        }
    }
}

/// MCIAS mode: the token is verified (locally or online, see
/// `crate::mcias`), then the policy (`[auth]` in agent.toml) gives the
/// account its level.
pub struct McIasValidator {
    verifier: Arc<crate::mcias::Verifier>,
    policy: Policy,
}

impl McIasValidator {
    pub fn new(verifier: Arc<crate::mcias::Verifier>, policy: Policy) -> Self {
        McIasValidator { verifier, policy }
    }
}

#[async_trait]
impl TokenValidator for McIasValidator {
    async fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        use crate::mcias::VerifyError;
        let v = self.verifier.verify(token).await.map_err(|e| match e {
            VerifyError::Invalid(m) => AuthError::Unauthenticated(m),
            VerifyError::Unavailable(m) => AuthError::Unavailable(m),
        })?;
        let level = self
            .policy
            .level_for(&v.subject, v.username.as_deref(), &v.roles);
        Ok(Identity {
            subject: v.subject,
            username: v.username,
            roles: v.roles,
            expires_at: v.expires_at,
            level,
        })
    }
}

/// Paths that answer without a token: the standard gRPC health service only.
const UNAUTHENTICATED_PREFIX: &str = "/grpc.health.v1.Health/";

/// Extracts the token of `authorization: Bearer <token>`.
fn bearer(headers: &http::HeaderMap) -> Result<&str, AuthError> {
    let value = headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| AuthError::Unauthenticated("missing authorization: Bearer token".into()))?;
    let value = value
        .to_str()
        .map_err(|_| AuthError::Unauthenticated("malformed authorization header".into()))?;
    match value.split_once(' ') {
        Some((scheme, token))
            if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
        {
            Ok(token.trim())
        }
        _ => Err(AuthError::Unauthenticated(
            "malformed authorization header: expected Bearer <token>".into(),
        )),
    }
}

#[derive(Clone)]
pub struct AuthLayer {
    validator: Arc<dyn TokenValidator>,
}

impl AuthLayer {
    pub fn new(validator: Arc<dyn TokenValidator>) -> Self {
        AuthLayer { validator }
    }
}

impl<S> tower::Layer<S> for AuthLayer {
    type Service = AuthService<S>;
    fn layer(&self, inner: S) -> AuthService<S> {
        AuthService {
            inner,
            validator: self.validator.clone(),
        }
    }
}

#[derive(Clone)]
pub struct AuthService<S> {
    inner: S,
    validator: Arc<dyn TokenValidator>,
}

impl<S, B> tower::Service<http::Request<B>> for AuthService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        // The ready service is the one poll_ready was called on: keep it, leave a clone.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let validator = self.validator.clone();
        Box::pin(async move {
            if request.uri().path().starts_with(UNAUTHENTICATED_PREFIX) {
                return inner.call(request).await;
            }
            let checked = match bearer(request.headers()) {
                Ok(token) => validator.validate(token).await,
                Err(e) => Err(e),
            }
            .and_then(|identity| authz::authorize(request.uri().path(), identity));
            match checked {
                Ok(identity) => {
                    // The connection is busy (never closed as idle) until
                    // the response, streams included, has been sent.
                    let busy = request
                        .extensions()
                        .get::<super::listener::ConnInfo>()
                        .map(|c| c.state.begin_request());
                    if let Ok(token) = bearer(request.headers()) {
                        let token = BearerToken(token.into());
                        request.extensions_mut().insert(token);
                    }
                    request.extensions_mut().insert(identity);
                    let response = inner.call(request).await?;
                    Ok(match busy {
                        Some(busy) => response
                            .map(|body| tonic::body::Body::new(WhileSending { body, _busy: busy })),
                        None => response,
                    })
                }
                Err(e) => {
                    tracing::warn!(path = request.uri().path(), "refused request: {e}");
                    Ok(Status::from(e).into_http())
                }
            }
        })
    }
}

/// A response body that holds its request's mark on the connection until
/// the body ends or is dropped.
struct WhileSending {
    body: tonic::body::Body,
    _busy: super::listener::ActiveRequest,
}

impl http_body::Body for WhileSending {
    type Data = bytes::Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_parsing() {
        let mut h = http::HeaderMap::new();
        assert!(bearer(&h).is_err());
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(bearer(&h).is_err());
        h.insert("authorization", "Bearer ".parse().unwrap());
        assert!(bearer(&h).is_err());
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert_eq!(bearer(&h).unwrap(), "abc");
    }

    #[tokio::test]
    async fn local_token_is_created_private_and_checked() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let v = LocalTokenValidator::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let token = std::fs::read_to_string(&path).unwrap();
        assert!(v.validate(token.trim()).await.is_ok());
        assert!(v.validate("nope").await.is_err());
        // A second start reads the same token.
        let again = LocalTokenValidator::load_or_create(&path).unwrap();
        assert!(again.validate(token.trim()).await.is_ok());
    }
}
