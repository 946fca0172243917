//! The node's secret store: values an operator sets with `mcp secret set`,
//! kept by the agent in `<state-dir>/secrets/<service>/<name>` (files 0600,
//! directories 0700). Not under `<srv-root>/<service>/`, which `mcp pull`
//! and volumes reach; the state directory is never mountable (policy.rs)
//! nor reachable by a transfer (files/). Definitions, the registry, labels
//! and events carry secret names only; a value leaves this module only
//! towards the runtime's create (environment or read-only bind mount).
//!
//! Sync code, on blocking threads: the callers (ServiceActor, ComponentActor,
//! the gRPC layer) run it through `tokio::task::spawn_blocking`.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::names::Name;
use crate::spec::{ComponentDef, SecretName};

/// Largest value accepted: a key, a certificate chain, a password file.
pub const MAX_SECRET_BYTES: usize = 1 << 20;

/// Temp files of a write in progress start with this, which no secret
/// name can (names start with a letter or a digit).
const TEMP_PREFIX: &str = ".set-";

/// The store, rooted at `<state-dir>/secrets`.
#[derive(Debug, Clone, Default)]
pub struct SecretStore {
    /// Absolute: bind mounts name files under it. Empty: no store (unit
    /// tests of the actors), every use of a secret refused.
    root: PathBuf,
}

/// A stored secret as anyone may see it: its name and when it was set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretInfo {
    pub name: SecretName,
    /// Unix milliseconds of the last write.
    pub updated_at_ms: i64,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum SecretError {
    /// A bad request (empty or too large a value, a value that cannot be an
    /// environment variable's).
    #[error("{0}")]
    Invalid(String),
    /// No such secret (remove).
    #[error("{0}")]
    NotFound(String),
    /// A spec names secrets the store lacks.
    #[error("{0}")]
    Missing(String),
    #[error("{0}")]
    Io(String),
}

/// What a container gets from the store when it is created. Its Debug
/// shows names only, so it can travel in messages that are logged.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ResolvedSecrets {
    /// (variable, value) for the container's environment.
    pub env: Vec<(String, String)>,
    /// (file in the store, absolute container path), mounted read-only.
    pub files: Vec<(PathBuf, String)>,
}

impl std::fmt::Debug for ResolvedSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        let files: Vec<&str> = self.files.iter().map(|(_, p)| p.as_str()).collect();
        f.debug_struct("ResolvedSecrets")
            .field("env", &env)
            .field("files", &files)
            .finish()
    }
}

impl std::fmt::Debug for crate::proto::SetSecretRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SetSecretRequest")
            .field("service", &self.service)
            .field("name", &self.name)
            .field("value", &"(hidden)")
            .finish()
    }
}

fn io(what: impl std::fmt::Display, e: std::io::Error) -> SecretError {
    SecretError::Io(format!("{what}: {e}"))
}

fn millis(t: std::time::SystemTime) -> i64 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `path` as a directory only its owner may enter: created 0700 when
/// missing, narrowed to 0700 when found wider, refused when it is a
/// symlink or not a directory.
fn private_dir(path: &Path) -> Result<(), SecretError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(format!("mkdir {}", path.display()), e)),
    }
    let meta =
        std::fs::symlink_metadata(path).map_err(|e| io(format!("stat {}", path.display()), e))?;
    if !meta.file_type().is_dir() {
        return Err(SecretError::Io(format!(
            "{} is not a directory (a symlink is refused)",
            path.display()
        )));
    }
    if meta.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io(format!("chmod 0700 {}", path.display()), e))?;
    }
    Ok(())
}

/// Makes a rename or an unlink in `dir` durable.
fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), "fsync of the secret directory: {e}");
    }
}

fn info_of(name: SecretName, meta: &std::fs::Metadata) -> SecretInfo {
    SecretInfo {
        name,
        updated_at_ms: meta.modified().map_or(0, millis),
    }
}

impl SecretStore {
    /// The store at `root` (`<state-dir>/secrets`), made absolute.
    pub fn new(root: &Path) -> SecretStore {
        SecretStore {
            root: std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn service_dir(&self, service: &Name) -> Result<PathBuf, SecretError> {
        if self.root.as_os_str().is_empty() {
            return Err(SecretError::Io(
                "this agent has no secret store".to_string(),
            ));
        }
        // A Name cannot be `..` or hold a '/': the path stays in the root.
        Ok(self.root.join(service.as_str()))
    }

    /// Stores `value` as `service`'s secret `name`, replacing any earlier
    /// value whole (temp file, fsync, rename): a reader sees the old value
    /// or the new one, never a part.
    pub fn set(
        &self,
        service: &Name,
        name: &SecretName,
        value: &[u8],
    ) -> Result<SecretInfo, SecretError> {
        if value.is_empty() {
            return Err(SecretError::Invalid(format!(
                "secret {name}: the value is empty"
            )));
        }
        if value.len() > MAX_SECRET_BYTES {
            return Err(SecretError::Invalid(format!(
                "secret {name}: the value is larger than {} KiB",
                MAX_SECRET_BYTES / 1024
            )));
        }
        let dir = self.service_dir(service)?;
        private_dir(&self.root)?;
        private_dir(&dir)?;
        // tempfile creates it 0600, O_EXCL, in the same directory.
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&dir)
            .map_err(|e| io(format!("create a temp file in {}", dir.display()), e))?;
        temp.write_all(value)
            .and_then(|()| temp.as_file().sync_all())
            .map_err(|e| io(format!("write secret {name}"), e))?;
        let path = dir.join(name.as_str());
        let file = temp
            .persist(&path)
            .map_err(|e| io(format!("rename into {}", path.display()), e.error))?;
        sync_dir(&dir);
        let meta = file
            .metadata()
            .map_err(|e| io(format!("stat {}", path.display()), e))?;
        Ok(info_of(name.clone(), &meta))
    }

    /// `service`'s secrets by name (none when it has no directory).
    pub fn list(&self, service: &Name) -> Result<Vec<SecretInfo>, SecretError> {
        let dir = self.service_dir(service)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(format!("list {}", dir.display()), e)),
        };
        let mut found = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io(format!("list {}", dir.display()), e))?;
            // Temp files and anything else that is no secret's file are skipped.
            let Some(name) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            match entry.metadata() {
                Ok(meta) if meta.file_type().is_file() => found.push(info_of(name, &meta)),
                _ => continue,
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    /// Forgets `service`'s secret `name`.
    pub fn remove(&self, service: &Name, name: &SecretName) -> Result<(), SecretError> {
        let dir = self.service_dir(service)?;
        match std::fs::remove_file(dir.join(name.as_str())) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(SecretError::NotFound(format!(
                    "service {service} has no secret {name} on this node (`mcp secret list \
                     {service}`)"
                )))
            }
            Err(e) => return Err(io(format!("remove secret {name}"), e)),
        }
        sync_dir(&dir);
        // The last one gone: the directory goes too (fails quietly if not empty).
        let _ = std::fs::remove_dir(&dir);
        Ok(())
    }

    /// The file holding a secret, when there is one (a regular file, not
    /// a symlink).
    fn file_of(&self, service: &Name, name: &SecretName) -> Result<Option<PathBuf>, SecretError> {
        let path = self.service_dir(service)?.join(name.as_str());
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_file() => Ok(Some(path)),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("stat secret {name}"), e)),
        }
    }

    /// Which of the secrets `specs` name the store lacks, each with the
    /// components that need it.
    pub fn missing<'a>(
        &self,
        service: &Name,
        specs: impl IntoIterator<Item = &'a ComponentDef>,
    ) -> Result<Vec<(SecretName, Vec<String>)>, SecretError> {
        let mut missing: std::collections::BTreeMap<SecretName, Vec<String>> = Default::default();
        for spec in specs {
            for name in spec.secret_names() {
                if self.file_of(service, name)?.is_none() {
                    missing
                        .entry(name.clone())
                        .or_default()
                        .push(spec.name.to_string());
                }
            }
        }
        Ok(missing.into_iter().collect())
    }

    /// What a container of `spec` gets: each `secrets` variable's value,
    /// and each `secret_files` file. Err names what is missing and how to
    /// set it, never a value.
    pub fn resolve(
        &self,
        service: &Name,
        spec: &ComponentDef,
    ) -> Result<ResolvedSecrets, SecretError> {
        if spec.secrets.is_empty() && spec.secret_files.is_empty() {
            return Ok(ResolvedSecrets::default());
        }
        let missing = self.missing(service, [spec])?;
        if !missing.is_empty() {
            return Err(SecretError::Missing(describe_missing(service, &missing)));
        }
        let mut resolved = ResolvedSecrets::default();
        for (var, name) in &spec.secrets {
            let path = self
                .file_of(service, name)?
                .ok_or_else(|| SecretError::Missing(describe_missing(service, &[])))?;
            let bytes = std::fs::read(&path).map_err(|e| io(format!("read secret {name}"), e))?;
            let value = String::from_utf8(bytes)
                .ok()
                .filter(|v| !v.contains('\0'))
                .ok_or_else(|| {
                    SecretError::Invalid(format!(
                        "secret {name} cannot be the value of {var}: it is not UTF-8 text \
                         without NUL bytes (give it to the container with secret_files)"
                    ))
                })?;
            resolved.env.push((var.to_string(), value));
        }
        for (name, target) in &spec.secret_files {
            let path = self
                .file_of(service, name)?
                .ok_or_else(|| SecretError::Missing(describe_missing(service, &[])))?;
            resolved.files.push((path, target.to_string()));
        }
        Ok(resolved)
    }
}

/// What a deploy lacks and how to set it.
pub fn describe_missing(service: &Name, missing: &[(SecretName, Vec<String>)]) -> String {
    let list: Vec<String> = missing
        .iter()
        .map(|(name, components)| format!("{name} (for {})", components.join(", ")))
        .collect();
    let first = missing
        .first()
        .map_or_else(|| "NAME".to_string(), |(n, _)| n.to_string());
    format!(
        "service {service} needs secret(s) this node does not have: {}; set each with `mcp \
         secret set {service} {first}` (the value on standard input), then deploy again",
        if list.is_empty() {
            "(one was removed meanwhile)".to_string()
        } else {
            list.join(", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn name(s: &str) -> SecretName {
        s.parse().unwrap()
    }

    fn svc() -> Name {
        Name::parse("shop").unwrap()
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
    }

    fn component(extra: &str) -> ComponentDef {
        toml::from_str(&format!("name = \"api\"\nimage = \"img:1\"\n{extra}")).unwrap()
    }

    #[test]
    fn set_list_remove_with_private_modes() {
        let state = tempfile::tempdir().unwrap();
        let store = SecretStore::new(&state.path().join("secrets"));
        let info = store
            .set(&svc(), &name("db-password"), b"hunter2\n")
            .unwrap();
        assert_eq!(info.name, name("db-password"));
        assert!(info.updated_at_ms > 0);
        let file = state.path().join("secrets/shop/db-password");
        assert_eq!(std::fs::read(&file).unwrap(), b"hunter2\n");
        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(&state.path().join("secrets")), 0o700);
        assert_eq!(mode(&state.path().join("secrets/shop")), 0o700);
        // Replaced whole; a leftover temp file is no secret.
        store.set(&svc(), &name("db-password"), b"new").unwrap();
        std::fs::write(state.path().join("secrets/shop/.set-x"), "junk").unwrap();
        store.set(&svc(), &name("api-key"), b"k").unwrap();
        let names: Vec<String> = store
            .list(&svc())
            .unwrap()
            .into_iter()
            .map(|i| i.name.to_string())
            .collect();
        assert_eq!(names, ["api-key", "db-password"]);
        assert_eq!(std::fs::read(&file).unwrap(), b"new");
        store.remove(&svc(), &name("db-password")).unwrap();
        let err = store.remove(&svc(), &name("db-password")).unwrap_err();
        assert!(matches!(err, SecretError::NotFound(_)), "{err}");
        assert_eq!(store.list(&svc()).unwrap().len(), 1);
        assert!(store
            .list(&Name::parse("other").unwrap())
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_wide_directory_is_narrowed_and_bad_values_refused() {
        let state = tempfile::tempdir().unwrap();
        let root = state.path().join("secrets");
        std::fs::create_dir(&root).unwrap();
        std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
        let store = SecretStore::new(&root);
        store.set(&svc(), &name("a"), b"x").unwrap();
        assert_eq!(mode(&root), 0o700);
        for bad in [&b""[..], &vec![b'x'; MAX_SECRET_BYTES + 1][..]] {
            let err = store.set(&svc(), &name("b"), bad).unwrap_err();
            assert!(matches!(err, SecretError::Invalid(_)), "{err}");
        }
        let none = SecretStore::default();
        assert!(none.set(&svc(), &name("a"), b"x").is_err());
    }

    #[test]
    fn resolve_gives_values_and_files_or_names_what_is_missing() {
        let state = tempfile::tempdir().unwrap();
        let store = SecretStore::new(&state.path().join("secrets"));
        let spec = component(
            "secrets = { DB_PASSWORD = \"db-password\" }\n\
             secret_files = { \"db-password\" = \"/run/secrets/db\", tls = \"/tls/key\" }\n",
        );
        let err = store.resolve(&svc(), &spec).unwrap_err().to_string();
        assert!(
            err.contains("db-password (for api), tls (for api)")
                && err.contains("mcp secret set shop db-password"),
            "{err}"
        );
        store.set(&svc(), &name("db-password"), b"s3cret").unwrap();
        store.set(&svc(), &name("tls"), b"\x00\xffkey").unwrap();
        let resolved = store.resolve(&svc(), &spec).unwrap();
        assert_eq!(
            resolved.env,
            [("DB_PASSWORD".to_string(), "s3cret".to_string())]
        );
        let files: Vec<&str> = resolved.files.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(files, ["/run/secrets/db", "/tls/key"]);
        assert!(resolved.files[0].0.is_absolute());
        let shown = format!("{resolved:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("DB_PASSWORD"),
            "{shown}"
        );
        // Binary is fine in a file, not in the environment.
        let binary_env = component("secrets = { KEY = \"tls\" }\n");
        let err = store.resolve(&svc(), &binary_env).unwrap_err().to_string();
        assert!(err.contains("not UTF-8") && !err.contains("key"), "{err}");
        // Nothing named, nothing read (even without a store).
        assert_eq!(
            SecretStore::default()
                .resolve(&svc(), &component(""))
                .unwrap(),
            ResolvedSecrets::default()
        );
    }

    #[test]
    fn the_set_request_hides_its_value() {
        let request = crate::proto::SetSecretRequest {
            service: "shop".into(),
            name: "db".into(),
            value: b"s3cret".to_vec(),
        };
        let shown = format!("{request:?}");
        assert!(
            !shown.contains("s3cret") && shown.contains("hidden"),
            "{shown}"
        );
        let json = serde_json::to_string(&request).unwrap();
        assert!(!json.contains("value"), "{json}");
    }
}
