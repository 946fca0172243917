//! The answer of MCIAS's validation endpoint, read leniently: `sub` or
//! `subject`, an optional `username`, `roles`, and `expires_at` as unix
//! seconds (number or numeric string) or RFC 3339. See the module doc of
//! `mcias` for what is assumed.

use super::Verified;

/// What MCIAS said of a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Online {
    Valid(Verified),
    /// Why not, in words safe to send to the client.
    Invalid(String),
}

/// Reads a 2xx answer. An error means the answer is unusable (MCIAS is
/// treated as unavailable), never that the token is valid.
pub fn parse_answer(body: &[u8]) -> Result<Online, String> {
    let answer: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    if !answer.is_object() {
        return Err("not a JSON object".into());
    }
    if answer["valid"].as_bool() != Some(true) {
        return Ok(Online::Invalid("invalid token".into()));
    }
    let text = |name: &str| {
        answer[name]
            .as_str()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let subject = text("sub")
        .or_else(|| text("subject"))
        .ok_or("a valid token without a subject (sub)")?;
    let roles = match &answer["roles"] {
        serde_json::Value::Null => Vec::new(),
        serde_json::Value::Array(items) => items
            .iter()
            .map(|r| r.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or("roles are not strings")?,
        _ => return Err("roles are not a list".into()),
    };
    let expires_at = super::parse_time(&answer["expires_at"])?;
    Ok(Online::Valid(Verified {
        subject,
        username: text("username"),
        roles,
        expires_at,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Online, String> {
        parse_answer(v.to_string().as_bytes())
    }

    fn valid(v: serde_json::Value) -> Verified {
        match parse(v) {
            Ok(Online::Valid(v)) => v,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn each_shape_of_a_valid_answer() {
        let a = valid(
            json!({"valid": true, "sub": "u-1", "roles": ["admin"], "expires_at": 1700000000}),
        );
        assert_eq!(
            a,
            Verified {
                subject: "u-1".into(),
                username: None,
                roles: vec!["admin".into()],
                expires_at: Some(1700000000),
            }
        );
        let b = valid(
            json!({"valid": true, "subject": "u-2", "username": "bob", "roles": [], "expires_at": "2023-11-14T22:13:20Z"}),
        );
        assert_eq!(b.subject, "u-2");
        assert_eq!(b.username.as_deref(), Some("bob"));
        assert_eq!(b.expires_at, Some(1700000000));
        let c = valid(json!({"valid": true, "sub": "u-3", "expires_at": "1700000000"}));
        assert_eq!(c.expires_at, Some(1700000000));
        assert!(c.roles.is_empty());
        // `sub` wins over `subject`; an empty username is none.
        let d = valid(json!({"valid": true, "sub": "s", "subject": "t", "username": ""}));
        assert_eq!(
            (d.subject.as_str(), d.username, d.expires_at),
            ("s", None, None)
        );
    }

    #[test]
    fn invalid_and_unusable_answers() {
        for v in [
            json!({"valid": false, "sub": "u"}),
            json!({"sub": "u"}),
            json!({"valid": "true", "sub": "u"}),
        ] {
            assert!(matches!(parse(v), Ok(Online::Invalid(_))));
        }
        for v in [
            json!({"valid": true}),
            json!({"valid": true, "sub": ""}),
            json!({"valid": true, "sub": "u", "roles": "admin"}),
            json!({"valid": true, "sub": "u", "roles": [1]}),
            json!({"valid": true, "sub": "u", "expires_at": "soon"}),
            json!([true]),
        ] {
            assert!(parse(v.clone()).is_err(), "{v}");
        }
        assert!(parse_answer(b"<html>").is_err());
    }
}
