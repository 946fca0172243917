//! MCIAS's public signing keys: read from a JWK or a JWKS, kept in memory,
//! refreshed on a schedule and when a token names a key not in the set (at
//! most once per [`MIN_REFRESH_INTERVAL`]). A failed refresh keeps the keys
//! held, so tokens still verify while MCIAS is down.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

use super::{McIasClient, McIasError};

/// Fewest seconds between two fetches asked for by tokens (an unknown `kid`,
/// or no key yet), so a flood of forged `kid`s is not a flood of fetches.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
/// The schedule: keys are fetched again this often.
pub const REFRESH_EVERY: Duration = Duration::from_secs(600);

/// One Ed25519 public key and its `kid`, if it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: Option<String>,
    x: [u8; 32],
}

impl PublicKey {
    pub fn x(&self) -> &[u8] {
        &self.x
    }
}

/// The Ed25519 keys of a JWKS (`{"keys": [...]}`) or of a single JWK. Keys
/// of other types, or meant for another use or algorithm, are skipped; no
/// usable key at all is an error.
pub fn parse_key_set(body: &[u8]) -> Result<Vec<PublicKey>, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    let candidates = match value.get("keys") {
        Some(serde_json::Value::Array(keys)) => keys.clone(),
        Some(_) => return Err("\"keys\" is not a list".into()),
        None => vec![value],
    };
    let keys: Vec<PublicKey> = candidates.iter().filter_map(ed25519_key).collect();
    if keys.is_empty() {
        return Err("no Ed25519 signing key (kty OKP, crv Ed25519) in the answer".into());
    }
    Ok(keys)
}

fn ed25519_key(jwk: &serde_json::Value) -> Option<PublicKey> {
    let field = |name: &str| jwk.get(name).and_then(|v| v.as_str());
    if field("kty") != Some("OKP") || field("crv") != Some("Ed25519") {
        return None;
    }
    if field("use").is_some_and(|u| u != "sig") || field("alg").is_some_and(|a| a != "EdDSA") {
        return None;
    }
    let x = URL_SAFE_NO_PAD
        .decode(field("x")?.trim_end_matches('='))
        .ok()?;
    Some(PublicKey {
        kid: field("kid").map(str::to_string),
        x: x.try_into().ok()?,
    })
}

#[derive(Default)]
struct Held {
    keys: Arc<Vec<PublicKey>>,
    last_attempt: Option<Instant>,
    last_error: Option<String>,
}

/// The keys held, and the one fetch at a time that renews them.
pub struct KeyStore {
    client: McIasClient,
    held: Mutex<Held>,
    /// Held while fetching: callers that arrive meanwhile wait for that
    /// fetch instead of starting their own.
    fetching: tokio::sync::Mutex<()>,
}

impl KeyStore {
    pub fn new(client: McIasClient) -> Self {
        KeyStore {
            client,
            held: Mutex::new(Held::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn keys(&self) -> Arc<Vec<PublicKey>> {
        self.held().keys.clone()
    }

    /// Why the last fetch failed, if it did.
    pub fn last_error(&self) -> Option<String> {
        self.held().last_error.clone()
    }

    /// Fetches the keys unless a fetch was tried less than `min_interval`
    /// ago (by anyone: a caller that waited for another's fetch uses it).
    pub async fn refresh_if_due(&self, min_interval: Duration) {
        let _one_at_a_time = self.fetching.lock().await;
        let recent = self
            .held()
            .last_attempt
            .is_some_and(|t| t.elapsed() < min_interval);
        if recent {
            return;
        }
        let fetched = self.client.fetch_keys().await;
        let mut held = self.held();
        held.last_attempt = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                if *held.keys != keys {
                    let kids: Vec<&str> = keys.iter().filter_map(|k| k.kid.as_deref()).collect();
                    tracing::info!(
                        keys = keys.len(),
                        kids = ?kids,
                        "fetched MCIAS's token signing keys"
                    );
                }
                held.keys = Arc::new(keys);
                held.last_error = None;
            }
            Err(e) => {
                let e = match e {
                    McIasError::Unavailable(m) | McIasError::Config(m) => m,
                };
                tracing::warn!(
                    held = held.keys.len(),
                    "cannot fetch MCIAS's token signing keys (the keys held are kept): {e}"
                );
                held.last_error = Some(e);
            }
        }
    }

    /// Fetches now, then every [`REFRESH_EVERY`], for the agent's lifetime.
    pub async fn refresh_forever(self: Arc<Self>) {
        loop {
            self.refresh_if_due(Duration::ZERO).await;
            tokio::time::sleep(REFRESH_EVERY).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";

    #[test]
    fn a_jwk_a_jwks_and_what_is_skipped() {
        let one = json!({"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "a"});
        let keys = parse_key_set(one.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid.as_deref(), Some("a"));
        assert_eq!(keys[0].x().len(), 32);

        let set = json!({"keys": [
            {"kty": "RSA", "n": "xx", "e": "AQAB", "kid": "rsa"},
            {"kty": "OKP", "crv": "X25519", "x": X, "kid": "dh"},
            {"kty": "OKP", "crv": "Ed25519", "x": X, "kid": "enc", "use": "enc"},
            {"kty": "OKP", "crv": "Ed25519", "x": "c2hvcnQ", "kid": "short"},
            {"kty": "OKP", "crv": "Ed25519", "x": X, "alg": "EdDSA", "use": "sig"},
        ]});
        let keys = parse_key_set(set.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].kid, None);

        assert!(parse_key_set(b"{\"keys\": []}").is_err());
        assert!(parse_key_set(b"{\"keys\": {}}").is_err());
        assert!(parse_key_set(b"<html>").is_err());
        assert!(parse_key_set(
            json!({"kty": "oct", "k": "c2VjcmV0"})
                .to_string()
                .as_bytes()
        )
        .is_err());
    }
}
