//! Names of services, components and nodes. They become container names and
//! paths under `/srv/`, so anything outside `^[a-z0-9][a-z0-9-]{0,62}$` is refused
//! before it can reach the runtime or the file system.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub const MAX_NAME_LEN: usize = 63;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Name(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid name {name:?}: {reason} (names match ^[a-z0-9][a-z0-9-]{{0,62}}$)")]
pub struct NameError {
    pub name: String,
    pub reason: &'static str,
}

impl Name {
    pub fn parse(s: &str) -> Result<Self, NameError> {
        let fail = |reason| {
            Err(NameError {
                name: s.to_string(),
                reason,
            })
        };
        let mut chars = s.chars();
        match chars.next() {
            None => return fail("it is empty"),
            Some(c) if !(c.is_ascii_lowercase() || c.is_ascii_digit()) => {
                return fail("it must start with a lowercase letter or a digit")
            }
            Some(_) => {}
        }
        if s.len() > MAX_NAME_LEN {
            return fail("it is longer than 63 characters");
        }
        if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
            return fail("only lowercase letters, digits and '-' are allowed");
        }
        Ok(Name(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Name::parse(s)
    }
}

impl TryFrom<String> for Name {
    type Error = NameError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Name::parse(&s)
    }
}

impl From<Name> for String {
    fn from(n: Name) -> String {
        n.0
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The container that runs `service/component` on a node.
pub fn container_name(service: &Name, component: &Name) -> String {
    format!("{service}-{component}")
}

/// `SVC` or `SVC/COMP`, as the lifecycle commands take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub service: Name,
    pub component: Option<Name>,
}

impl FromStr for Target {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            None => Ok(Target {
                service: Name::parse(s)?,
                component: None,
            }),
            Some((svc, comp)) => Ok(Target {
                service: Name::parse(svc)?,
                component: Some(Name::parse(comp)?),
            }),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.component {
            None => write!(f, "{}", self.service),
            Some(c) => write!(f, "{}/{}", self.service, c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_valid_names() {
        for ok in ["a", "0", "metacrypt", "web-2", &"a".repeat(63)] {
            assert!(Name::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn refuses_invalid_names() {
        for bad in [
            "",
            "-a",
            "A",
            "a_b",
            "a/b",
            "..",
            "a.b",
            "é",
            "a\0b",
            " a",
            &"a".repeat(64),
        ] {
            assert!(Name::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn targets() {
        let t: Target = "svc/web".parse().unwrap();
        assert_eq!(t.service.as_str(), "svc");
        assert_eq!(t.component.as_ref().map(Name::as_str), Some("web"));
        assert!("svc/".parse::<Target>().is_err());
        assert!("svc/a/b".parse::<Target>().is_err());
        assert_eq!("svc".parse::<Target>().unwrap().to_string(), "svc");
    }
}
