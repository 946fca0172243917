//! `POST /v1/auth/login`: the request `mcp login` sends and what its answer
//! means. The TOTP and refusal shapes are assumptions (module doc of `mcias`).

use serde::Serialize;

/// Longest refusal reason shown (MCIAS's text, passed on to the operator).
const MAX_REASON_CHARS: usize = 200;

#[derive(Debug, Serialize)]
pub struct LoginRequest<'a> {
    pub username: &'a str,
    pub password: &'a str,
    pub service_name: &'a str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    pub tags: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    pub totp_code: Option<&'a str>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum LoginOutcome {
    LoggedIn {
        token: String,
        /// Unix seconds: the answer's `expires_at`, else the token's `exp`.
        expires_at: Option<i64>,
    },
    /// Send the request again with a TOTP code.
    TotpRequired,
    /// 401.
    BadCredentials,
    /// 403, with MCIAS's reason if it gave one.
    Refused(Option<String>),
}

/// What an answer with `status` and `body` means; an error for an answer
/// that is not one of the above.
pub fn read_answer(status: u16, body: &[u8]) -> Result<LoginOutcome, String> {
    let json: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    match status {
        200..=299 => {
            let token = json["token"]
                .as_str()
                .filter(|t| !t.is_empty())
                .ok_or("the login answer has no token")?
                .to_string();
            let expires_at = match super::parse_time(&json["expires_at"]) {
                Ok(Some(t)) => Some(t),
                _ => super::unverified_expiry(&token),
            };
            Ok(LoginOutcome::LoggedIn { token, expires_at })
        }
        401 | 403 if totp_required(&json) => Ok(LoginOutcome::TotpRequired),
        401 => Ok(LoginOutcome::BadCredentials),
        403 => Ok(LoginOutcome::Refused(reason(&json))),
        s => Err(format!("answered {s}")),
    }
}

fn totp_required(json: &serde_json::Value) -> bool {
    json["totp_required"].as_bool() == Some(true)
        || ["error", "code"].iter().any(|f| {
            json[f]
                .as_str()
                .is_some_and(|s| s.eq_ignore_ascii_case("totp_required"))
        })
}

fn reason(json: &serde_json::Value) -> Option<String> {
    ["error", "message", "reason"]
        .iter()
        .filter_map(|f| json[f].as_str())
        .map(|s| {
            s.chars()
                .filter(|c| !c.is_control())
                .take(MAX_REASON_CHARS)
                .collect::<String>()
        })
        .find(|s| !s.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers() {
        let ok = read_answer(
            200,
            br#"{"token": "t", "expires_at": "2023-11-14T22:13:20Z"}"#,
        );
        assert_eq!(
            ok,
            Ok(LoginOutcome::LoggedIn {
                token: "t".into(),
                expires_at: Some(1700000000)
            })
        );
        // No expires_at: the JWT's exp.
        let jwt = "eyJhbGciOiJFZERTQSJ9.eyJleHAiOjE3MDAwMDAwMDB9.c2ln";
        let ok = read_answer(200, format!(r#"{{"token": "{jwt}"}}"#).as_bytes()).unwrap();
        assert_eq!(
            ok,
            LoginOutcome::LoggedIn {
                token: jwt.into(),
                expires_at: Some(1700000000)
            }
        );
        assert!(read_answer(200, b"{}").is_err());
        assert_eq!(
            read_answer(401, br#"{"totp_required": true}"#),
            Ok(LoginOutcome::TotpRequired)
        );
        assert_eq!(
            read_answer(403, br#"{"error": "TOTP_REQUIRED"}"#),
            Ok(LoginOutcome::TotpRequired)
        );
        assert_eq!(read_answer(401, b""), Ok(LoginOutcome::BadCredentials));
        assert_eq!(
            read_answer(403, br#"{"error": "account locked\u001b[2J"}"#),
            Ok(LoginOutcome::Refused(Some("account locked[2J".into())))
        );
        assert_eq!(read_answer(403, b"no"), Ok(LoginOutcome::Refused(None)));
        assert!(read_answer(500, b"").is_err());
    }

    #[test]
    fn the_request_omits_what_is_not_there() {
        let tags = vec!["env:prod".to_string()];
        let mut r = LoginRequest {
            username: "u",
            password: "p",
            service_name: "mcp",
            tags: &[],
            totp_code: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"username": "u", "password": "p", "service_name": "mcp"})
        );
        r.tags = &tags;
        r.totp_code = Some("123456");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"username": "u", "password": "p", "service_name": "mcp", "tags": ["env:prod"], "totp_code": "123456"})
        );
    }
}
