//! The node's registry logins (`[[registries]]` in agent.toml): which
//! username and password a pull from a registry host uses. Either the
//! node's own (the password read from a file at start, never from the
//! config itself) or the caller's: their name and their MCIAS token, for a
//! registry that accepts it. Secrets never show (their Debug is redacted).

use std::collections::BTreeMap;
use std::sync::Arc;

use super::RegistryLogin;
use crate::spec::Image;

/// How pulls from one registry host log in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegistryAuth {
    /// The node's own login.
    Node(RegistryLogin),
    /// The caller's name and bearer token; a pull nobody asked for (a
    /// recovery) has none and goes without.
    CallerToken,
}

/// Who asked for a deploy, for a registry that takes their token.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub token: Arc<str>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Caller({}, token hidden)", self.name)
    }
}

#[derive(Debug, Clone, Default)]
pub struct RegistryLogins {
    by_host: BTreeMap<String, RegistryAuth>,
}

impl RegistryLogins {
    pub fn new(logins: impl IntoIterator<Item = (String, RegistryAuth)>) -> Self {
        RegistryLogins {
            by_host: logins.into_iter().collect(),
        }
    }

    /// The login for the registry `image` names; None for an image without
    /// a registry host, a host with no login, or a caller's-token host
    /// without a caller.
    pub fn for_image(&self, image: &Image, caller: Option<&Caller>) -> Option<RegistryLogin> {
        match self.by_host.get(image.registry()?)? {
            RegistryAuth::Node(login) => Some(login.clone()),
            RegistryAuth::CallerToken => caller.map(|c| RegistryLogin {
                username: c.name.clone(),
                password: c.token.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_applies_to_its_host_only() {
        let login = RegistryLogin {
            username: "u".into(),
            password: "secret".into(),
        };
        let logins = RegistryLogins::new([
            (
                "127.0.0.1:5000".to_string(),
                RegistryAuth::Node(login.clone()),
            ),
            ("127.0.0.1:6000".to_string(), RegistryAuth::CallerToken),
        ]);
        let image = |s: &str| s.parse::<Image>().unwrap();
        let caller = Caller {
            name: "alice".into(),
            token: "t0k3n-xyz".into(),
        };
        assert_eq!(
            logins.for_image(&image("127.0.0.1:5000/app:1"), Some(&caller)),
            Some(login.clone())
        );
        assert_eq!(logins.for_image(&image("127.0.0.2:5000/app:1"), None), None);
        assert_eq!(logins.for_image(&image("app:1"), None), None);
        let theirs = logins.for_image(&image("127.0.0.1:6000/app:1"), Some(&caller));
        assert_eq!(
            theirs.map(|l| (l.username, l.password)),
            Some(("alice".into(), "t0k3n-xyz".into()))
        );
        assert_eq!(logins.for_image(&image("127.0.0.1:6000/app:1"), None), None);
        assert!(!format!("{login:?} {caller:?}").contains("secret"));
        assert!(!format!("{caller:?}").contains("t0k3n"));
    }
}
