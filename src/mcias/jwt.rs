//! Local verification of MCIAS's tokens: compact JWS (`header.payload.signature`,
//! base64url without padding), `alg` EdDSA only, the Ed25519 signature checked
//! by `ring` over the first two parts as sent, then the claims. Nothing in the
//! payload is read before the signature is good.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;

use super::keys::PublicKey;
use super::Verified;

/// Leeway on `nbf` for a clock behind MCIAS's; `exp` gets none.
const NBF_LEEWAY_SECS: i64 = 30;
/// Longest token looked at; MCIAS's are a few hundred bytes.
const MAX_TOKEN_BYTES: usize = 8 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum JwtError {
    /// Not a compact JWS at all: maybe a token of another kind.
    NotAJwt,
    /// A JWT, refused (wrong algorithm, bad signature, expired, ...).
    Refused(String),
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    /// Extensions the verifier must understand: it understands none.
    #[serde(default)]
    crit: Option<serde_json::Value>,
}

/// A token split and decoded, its signature not yet checked.
pub struct Jwt<'a> {
    pub kid: Option<String>,
    signing_input: &'a str,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

/// Splits and decodes `token`; refuses any `alg` but EdDSA (so `none`, and
/// HS256 keyed with the public key, never reach a key).
pub fn parse(token: &str) -> Result<Jwt<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::NotAJwt);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::NotAJwt);
    };
    let header: Header = URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|h| serde_json::from_slice(&h).ok())
        .ok_or(JwtError::NotAJwt)?;
    if header.alg != "EdDSA" {
        return Err(JwtError::Refused(
            "token algorithm refused: only EdDSA is accepted".into(),
        ));
    }
    if header.crit.is_some() {
        return Err(JwtError::Refused(
            "token has critical header extensions, which are not supported".into(),
        ));
    }
    let refused = |what: &str| JwtError::Refused(format!("malformed token: {what}"));
    let payload = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| refused("payload is not base64url"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| refused("signature is not base64url"))?;
    Ok(Jwt {
        kid: header.kid,
        signing_input: token.rsplit_once('.').map_or("", |(input, _)| input),
        payload,
        signature,
    })
}

impl Jwt<'_> {
    /// Whether `key` signed this token.
    pub fn signed_by(&self, key: &PublicKey) -> bool {
        ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, key.x())
            .verify(self.signing_input.as_bytes(), &self.signature)
            .is_ok()
    }

    /// The claims of a token whose signature was checked: `exp` (required),
    /// `nbf`, `iss` (when `issuer` is given), `sub` (required).
    pub fn claims(&self, now_secs: i64, issuer: Option<&str>) -> Result<Verified, JwtError> {
        let refused = |m: &str| JwtError::Refused(m.to_string());
        let claims: serde_json::Value =
            serde_json::from_slice(&self.payload).map_err(|_| refused("malformed token claims"))?;
        let exp = super::parse_time(&claims["exp"])
            .ok()
            .flatten()
            .ok_or_else(|| refused("token without a usable exp"))?;
        if now_secs >= exp {
            return Err(refused("token expired"));
        }
        if let Ok(Some(nbf)) = super::parse_time(&claims["nbf"]) {
            if nbf > now_secs + NBF_LEEWAY_SECS {
                return Err(refused("token not valid yet (nbf)"));
            }
        } else if !claims["nbf"].is_null() {
            return Err(refused("token with a malformed nbf"));
        }
        if let Some(expected) = issuer {
            if claims["iss"].as_str() != Some(expected) {
                return Err(refused("token from another issuer (iss)"));
            }
        }
        let subject = claims["sub"]
            .as_str()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| refused("token without a subject (sub)"))?
            .to_string();
        let roles = match &claims["roles"] {
            serde_json::Value::Null => Vec::new(),
            serde_json::Value::Array(items) => items
                .iter()
                .map(|r| r.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
                .ok_or_else(|| refused("token roles are not strings"))?,
            _ => return Err(refused("token roles are not a list")),
        };
        let username = claims["username"]
            .as_str()
            .filter(|u| !u.is_empty())
            .map(str::to_string);
        Ok(Verified {
            subject,
            username,
            roles,
            expires_at: Some(exp),
        })
    }
}

/// The `exp` of a JWT, read without any check: for showing when a token
/// from `mcp login` expires, never for trusting it.
pub fn unverified_expiry(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    super::parse_time(&claims["exp"]).ok().flatten()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use ring::signature::KeyPair as _;
    use serde_json::json;

    pub fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    pub fn keypair() -> ring::signature::Ed25519KeyPair {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
        ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
    }

    pub fn public(key: &ring::signature::Ed25519KeyPair, kid: Option<&str>) -> PublicKey {
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": b64(key.public_key().as_ref()), "kid": kid});
        super::super::keys::parse_key_set(jwk.to_string().as_bytes())
            .unwrap()
            .remove(0)
    }

    pub fn sign(
        key: &ring::signature::Ed25519KeyPair,
        header: serde_json::Value,
        claims: serde_json::Value,
    ) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = key.sign(input.as_bytes());
        format!("{input}.{}", b64(sig.as_ref()))
    }

    fn verify(token: &str, key: &PublicKey, now: i64) -> Result<Verified, JwtError> {
        let jwt = parse(token)?;
        if !jwt.signed_by(key) {
            return Err(JwtError::Refused("bad signature".into()));
        }
        jwt.claims(now, Some("mcias"))
    }

    #[test]
    fn a_good_token_and_each_way_to_spoil_it() {
        let key = keypair();
        let pk = public(&key, Some("k1"));
        let now = 1_700_000_000;
        let header = json!({"alg": "EdDSA", "typ": "JWT", "kid": "k1"});
        let claims = json!({"sub": "u-1", "roles": ["admin"], "iss": "mcias", "exp": now + 60, "iat": now, "jti": "j"});
        let good = sign(&key, header.clone(), claims.clone());
        let v = verify(&good, &pk, now).unwrap();
        assert_eq!(v.subject, "u-1");
        assert_eq!(v.roles, vec!["admin"]);
        assert_eq!(v.expires_at, Some(now + 60));
        assert_eq!(parse(&good).unwrap().kid.as_deref(), Some("k1"));
        assert_eq!(unverified_expiry(&good), Some(now + 60));

        // Expired, by a second.
        assert_eq!(
            verify(&good, &pk, now + 60),
            Err(JwtError::Refused("token expired".into()))
        );
        // Another key.
        let other = sign(&keypair(), header.clone(), claims.clone());
        assert!(verify(&other, &pk, now).is_err());
        // A tampered payload under the original signature.
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged_claims = b64(
            json!({"sub": "u-1", "roles": ["admin", "x"], "iss": "mcias", "exp": now + 60})
                .to_string()
                .as_bytes(),
        );
        parts[1] = &forged_claims;
        assert!(verify(&parts.join("."), &pk, now).is_err());
        // alg none, with and without a signature.
        let none_input = format!(
            "{}.{}",
            b64(json!({"alg": "none"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        assert!(matches!(
            parse(&format!("{none_input}.")),
            Err(JwtError::Refused(_))
        ));
        // HS256 keyed with the public key.
        let hs_input = format!(
            "{}.{}",
            b64(json!({"alg": "HS256"}).to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mac = ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, pk.x()),
            hs_input.as_bytes(),
        );
        let hs = format!("{hs_input}.{}", b64(mac.as_ref()));
        assert!(matches!(parse(&hs), Err(JwtError::Refused(_))));
        // Wrong issuer, future nbf, missing exp, missing sub.
        for (bad, says) in [
            (
                json!({"sub": "u", "iss": "other", "exp": now + 60}),
                "issuer",
            ),
            (
                json!({"sub": "u", "iss": "mcias", "exp": now + 60, "nbf": now + 600}),
                "nbf",
            ),
            (json!({"sub": "u", "iss": "mcias"}), "exp"),
            (json!({"iss": "mcias", "exp": now + 60}), "sub"),
            (
                json!({"sub": "u", "iss": "mcias", "exp": now + 60, "roles": "admin"}),
                "roles",
            ),
        ] {
            let t = sign(&key, header.clone(), bad);
            match verify(&t, &pk, now) {
                Err(JwtError::Refused(m)) => assert!(m.contains(says), "{m}"),
                other => panic!("{says}: {other:?}"),
            }
        }
        // A small nbf skew is tolerated.
        let t = sign(
            &key,
            header.clone(),
            json!({"sub": "u", "iss": "mcias", "exp": now + 60, "nbf": now + 10, "username": "bob"}),
        );
        assert_eq!(
            verify(&t, &pk, now).unwrap().username.as_deref(),
            Some("bob")
        );
    }

    #[test]
    fn what_is_not_a_jwt() {
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "tok-admin-4f1e9a7c2b",
            "!!.e30.e30",
        ] {
            assert!(matches!(parse(t), Err(JwtError::NotAJwt)), "{t}");
        }
        let header = b64(json!({"alg": "EdDSA", "crit": ["exp"]})
            .to_string()
            .as_bytes());
        assert!(matches!(
            parse(&format!("{header}.e30.AAAA")),
            Err(JwtError::Refused(_))
        ));
    }
}
