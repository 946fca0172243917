//! The agent's TLS material. Unless the operator configures a certificate and
//! key, the first start creates a private CA and a server certificate signed by
//! it; the CLI trusts that CA (and nothing else) for this node.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub struct ServerIdentity {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    /// The CA the CLI must trust; None when the operator brought their own.
    pub ca_path: Option<PathBuf>,
}

/// Writes `contents` to `path` with `mode`, via a temporary file and rename, so
/// a crash never leaves half a key behind.
pub fn write_private(path: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(contents)?;
    f.sync_all()?;
    fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))?;
    fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Loads the operator's certificate and key.
pub fn load_identity(cert: &Path, key: &Path) -> Result<ServerIdentity> {
    Ok(ServerIdentity {
        cert_pem: fs::read(cert).with_context(|| format!("cannot read {}", cert.display()))?,
        key_pem: fs::read(key).with_context(|| format!("cannot read {}", key.display()))?,
        ca_path: None,
    })
}

/// Loads the generated identity from `dir`, creating it on first use with the
/// given names (DNS names or IP addresses) in the server certificate.
pub fn ensure_generated_identity(dir: &Path, names: &[String]) -> Result<ServerIdentity> {
    let ca_path = dir.join("ca.pem");
    let cert_path = dir.join("server.pem");
    let key_path = dir.join("server.key");
    if !(ca_path.exists() && cert_path.exists() && key_path.exists()) {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
        let (ca_pem, cert_pem, key_pem) = generate(names)?;
        write_private(&key_path, key_pem.as_bytes(), 0o600)?;
        write_private(&cert_path, cert_pem.as_bytes(), 0o644)?;
        write_private(&ca_path, ca_pem.as_bytes(), 0o644)?;
        tracing::info!(ca = %ca_path.display(), "created a private CA and server certificate");
    }
    let mut identity = load_identity(&cert_path, &key_path)?;
    identity.ca_path = Some(ca_path);
    Ok(identity)
}

/// SHA-256 of the first certificate in a PEM file, as hex pairs joined by ':'.
pub fn fingerprint(pem_path: &Path) -> Result<String> {
    use rustls_pki_types::pem::PemObject;
    use sha2::Digest;
    let der = rustls_pki_types::CertificateDer::from_pem_file(pem_path)
        .with_context(|| format!("{} holds no PEM certificate", pem_path.display()))?;
    let digest = sha2::Sha256::digest(der.as_ref());
    Ok(digest
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// (CA certificate, server certificate, server key), all PEM. The CA key is
/// used once here and never stored.
fn generate(names: &[String]) -> Result<(String, String, String)> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "mcp-agent private CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let server_key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, names.first().map_or("mcp-agent", |n| n));
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = params.signed_by(&server_key, &issuer)?;
    Ok((ca_cert.pem(), cert.pem(), server_key.serialize_pem()))
}
