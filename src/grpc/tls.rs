//! The agent's TLS material. Unless the operator configures a certificate and
//! key, the first start creates a private CA (10 years) and a server
//! certificate signed by it (1 year); the CLI trusts that CA, and nothing
//! else, for this node. The CA key stays in the TLS directory (mode 0600) so
//! that `mcp-agent init --renew` can issue a new server certificate that the
//! CLIs already trust; an operator who wants it offline moves it away and
//! passes `--ca-key` when renewing.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use time::{Duration as TimeSpan, OffsetDateTime};

pub struct ServerIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The CA the CLI must trust; None when the operator brought their own.
    pub ca_path: Option<PathBuf>,
}

/// How long the generated certificates are valid.
pub const CA_LIFETIME_DAYS: i64 = 3650;
pub const SERVER_LIFETIME_DAYS: i64 = 365;
/// The agent warns this long before its certificate expires.
pub const EXPIRY_WARNING_DAYS: i64 = 30;

/// The files of a generated identity in `dir`.
pub struct GeneratedPaths {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl GeneratedPaths {
    pub fn in_dir(dir: &Path) -> Self {
        GeneratedPaths {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}

/// Writes `contents` to `path` with `mode`, through a temporary file in the
/// same directory that is renamed into place, so a crash never leaves half a
/// key behind and the mode holds whatever the umask.
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".mcp-write-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(contents)?;
    tmp.as_file().sync_all()?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(mode))?;
    tmp.persist(path)
        .map_err(|e| e.error)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Refuses a secret file (key, token) that group or others may read.
pub fn check_private(path: &Path, what: &str) -> Result<()> {
    let mode = fs::metadata(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        bail!(
            "{what} {} is readable by group or others (mode {:04o}): run `chmod 600 {}`",
            path.display(),
            mode & 0o7777,
            path.display()
        );
    }
    Ok(())
}

/// Creates `dir` (and its parents) if needed and makes it mode 0700.
pub fn private_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
        .with_context(|| format!("cannot make {} private (0700)", dir.display()))
}

/// Loads the operator's certificate and key.
pub fn load_identity(cert: &Path, key: &Path) -> Result<ServerIdentity> {
    check_private(key, "the TLS key")?;
    Ok(ServerIdentity {
        cert_pem: fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?,
        key_pem: fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
        ca_path: None,
    })
}

/// Loads the generated identity from `dir`, creating it on first use with the
/// given names (DNS names or IP addresses) in the server certificate.
pub fn ensure_generated_identity(dir: &Path, names: &[String]) -> Result<ServerIdentity> {
    let paths = GeneratedPaths::in_dir(dir);
    if !(paths.ca.exists() && paths.cert.exists() && paths.key.exists()) {
        private_dir(dir)?;
        let ca_key = KeyPair::generate()?;
        let ca_params = ca_params()?;
        let ca_cert = ca_params.self_signed(&ca_key)?;
        let (cert_pem, key_pem) = server_cert(&Issuer::new(ca_params, &ca_key), names)?;
        write_private(&paths.ca_key, ca_key.serialize_pem().as_bytes(), 0o600)?;
        write_private(&paths.key, key_pem.as_bytes(), 0o600)?;
        write_private(&paths.cert, cert_pem.as_bytes(), 0o644)?;
        write_private(&paths.ca, ca_cert.pem().as_bytes(), 0o644)?;
        tracing::info!(ca = %paths.ca.display(), "created a private CA and server certificate");
    }
    let mut identity = load_identity(&paths.cert, &paths.key)?;
    identity.ca_path = Some(paths.ca);
    Ok(identity)
}

/// Issues a new server certificate (and key) from the existing CA in `dir`,
/// for `names`; the CA itself, and so every CLI's trust, stays. `ca_key`
/// overrides where the CA key is read from.
pub fn renew_server_certificate(dir: &Path, names: &[String], ca_key: Option<&Path>) -> Result<()> {
    let paths = GeneratedPaths::in_dir(dir);
    let ca_pem = fs::read_to_string(&paths.ca).with_context(|| {
        format!(
            "no generated CA at {}: `mcp-agent init` creates one",
            paths.ca.display()
        )
    })?;
    let key_path = ca_key.unwrap_or(&paths.ca_key);
    let key_pem = fs::read_to_string(key_path).map_err(|e| {
        anyhow!(
            "cannot read the CA key {}: {e}. An agent older than this one discarded it; \
             then remove {} and run `mcp-agent init` for a new CA, and give every CLI the new \
             ca.pem",
            key_path.display(),
            dir.display()
        )
    })?;
    let ca_key = KeyPair::from_pem(&key_pem)
        .with_context(|| format!("{} is not a PEM private key", key_path.display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, &ca_key)
        .with_context(|| format!("{} is not a CA certificate", paths.ca.display()))?;
    let (cert_pem, server_key_pem) = server_cert(&issuer, names)?;
    write_private(&paths.key, server_key_pem.as_bytes(), 0o600)?;
    write_private(&paths.cert, cert_pem.as_bytes(), 0o644)?;
    Ok(())
}

/// SHA-256 of the first certificate in a PEM file, as hex pairs joined by ':'.
pub fn fingerprint(pem_path: &Path) -> Result<String> {
    use sha2::Digest;
    let der = first_certificate(&fs::read(pem_path)?)
        .with_context(|| format!("{} holds no PEM certificate", pem_path.display()))?;
    let digest = sha2::Sha256::digest(der.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

fn first_certificate(pem: &[u8]) -> Result<rustls_pki_types::CertificateDer<'static>> {
    use rustls_pki_types::pem::PemObject;
    Ok(rustls_pki_types::CertificateDer::from_pem_slice(pem)?)
}

/// When the first certificate of `cert_pem` expires, in Unix milliseconds.
pub fn not_after_ms(cert_pem: &[u8]) -> Result<i64> {
    let der = first_certificate(cert_pem).context("no PEM certificate")?;
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| anyhow!("unreadable certificate: {e}"))?;
    Ok(cert.validity().not_after.timestamp().saturating_mul(1000))
}

/// rustls's server configuration for the identity: HTTP/2 only (gRPC), TLS
/// 1.3 preferred, 1.2 accepted.
pub fn server_config(identity: &ServerIdentity) -> Result<rustls::ServerConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_slice_iter(&identity.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .context("the server certificate is not PEM")?;
    if certs.is_empty() {
        bail!("the server certificate file holds no certificate");
    }
    let key =
        PrivateKeyDer::from_pem_slice(&identity.key_pem).context("the TLS key is not a PEM key")?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS key does not match the certificate")?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

fn validity(params: &mut CertificateParams, days: i64) {
    let now = OffsetDateTime::now_utc();
    // An hour of slack for clocks a little behind.
    params.not_before = now - TimeSpan::hours(1);
    params.not_after = now + TimeSpan::days(days);
}

fn ca_params() -> Result<CertificateParams> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params
        .distinguished_name
        .push(DnType::CommonName, "mcp-agent private CA");
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut params, CA_LIFETIME_DAYS);
    Ok(params)
}

/// (server certificate, server key), PEM.
fn server_cert(issuer: &Issuer<'_, &KeyPair>, names: &[String]) -> Result<(String, String)> {
    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().map_or("mcp-agent", |n| n));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, SERVER_LIFETIME_DAYS);
    let cert = params.signed_by(&server_key, issuer)?;
    Ok((cert.pem(), server_key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn days_from_now(ms: i64) -> i64 {
        (ms - crate::registry::now_ms()) / 86_400_000
    }

    #[test]
    fn lifetimes_modes_and_renewal_from_the_same_ca() {
        let dir = tempfile::tempdir().unwrap();
        let tls = dir.path().join("tls");
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let first = ensure_generated_identity(&tls, &names).unwrap();
        let paths = GeneratedPaths::in_dir(&tls);
        let ca_pem = fs::read(&paths.ca).unwrap();
        assert!((3649..=3650).contains(&days_from_now(not_after_ms(&ca_pem).unwrap())));
        assert!((364..=365).contains(&days_from_now(not_after_ms(&first.cert_pem).unwrap())));
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&tls), 0o700);
        assert_eq!(mode(&paths.key), 0o600);
        assert_eq!(mode(&paths.ca_key), 0o600);

        renew_server_certificate(&tls, &names, None).unwrap();
        let renewed = fs::read(&paths.cert).unwrap();
        assert_ne!(renewed, first.cert_pem);
        assert_eq!(fs::read(&paths.ca).unwrap(), ca_pem, "the CA stays");
        // The renewed certificate is the CA's: a client trusting ca.pem
        // accepts a server with it.
        let identity = load_identity(&paths.cert, &paths.key).unwrap();
        let der = first_certificate(&renewed).unwrap();
        let ca_der = first_certificate(&ca_pem).unwrap();
        let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref()).unwrap();
        let (_, ca) = x509_parser::parse_x509_certificate(ca_der.as_ref()).unwrap();
        assert!(cert.verify_signature(Some(ca.public_key())).is_ok());
        assert!(server_config(&identity).is_ok());

        // Without the CA key there is no renewal, and the message says why.
        fs::remove_file(&paths.ca_key).unwrap();
        let err = renew_server_certificate(&tls, &names, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read the CA key"), "{err}");
    }

    #[test]
    fn secrets_readable_by_others_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.pem");
        write_private(&key, b"secret", 0o600).unwrap();
        check_private(&key, "the TLS key").unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let err = check_private(&key, "the TLS key").unwrap_err().to_string();
        assert!(err.contains("chmod 600"), "{err}");
        assert!(err.contains("0644"), "{err}");
    }
}
