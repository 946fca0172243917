//! The node's registry logins (`[[registries]]` in agent.toml): which
//! username and password a pull from a registry host uses. Passwords are
//! read from files at start, never from the config itself, and are never
//! shown (their Debug is redacted).

use std::collections::BTreeMap;

use super::RegistryLogin;
use crate::spec::Image;

#[derive(Debug, Clone, Default)]
pub struct RegistryLogins {
    by_host: BTreeMap<String, RegistryLogin>,
}

impl RegistryLogins {
    pub fn new(logins: impl IntoIterator<Item = (String, RegistryLogin)>) -> Self {
        RegistryLogins {
            by_host: logins.into_iter().collect(),
        }
    }

    /// The login for the registry `image` names; None for an image without
    /// a registry host, or a host with no login.
    pub fn for_image(&self, image: &Image) -> Option<&RegistryLogin> {
        self.by_host.get(image.registry()?)
    }

    pub fn hosts(&self) -> impl Iterator<Item = &str> {
        self.by_host.keys().map(String::as_str)
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
        let logins = RegistryLogins::new([("127.0.0.1:5000".to_string(), login.clone())]);
        let image = |s: &str| s.parse::<Image>().unwrap();
        assert_eq!(
            logins.for_image(&image("127.0.0.1:5000/app:1")),
            Some(&login)
        );
        assert_eq!(logins.for_image(&image("127.0.0.2:5000/app:1")), None);
        assert_eq!(logins.for_image(&image("app:1")), None);
        assert!(!format!("{login:?}").contains("secret"));
    }
}
