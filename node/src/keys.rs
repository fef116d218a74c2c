//! Key files: Ed25519 member keys and CA keys (Ed25519 or P-256) as PEM.

use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::SigningKey;
use pallet_membership::certgen::CaKey;

/// Reads an Ed25519 key from a PKCS#8 PEM file.
pub fn read_ed25519(path: &Path) -> Result<SigningKey> {
    let pem =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem)
        .map_err(|e| anyhow::anyhow!("{}: not a PKCS#8 PEM Ed25519 key: {e}", path.display()))
}

/// Reads a CA key: Ed25519 (PKCS#8) or P-256 (PKCS#8 or SEC1 `EC PRIVATE KEY`).
pub fn read_ca_key(path: &Path) -> Result<CaKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("reading CA key {}", path.display()))?;
    if let Ok(k) = SigningKey::from_pkcs8_pem(&pem) {
        return Ok(CaKey::Ed25519(k));
    }
    if let Ok(k) = p256::ecdsa::SigningKey::from_pkcs8_pem(&pem) {
        return Ok(CaKey::P256(k));
    }
    if let Ok(k) = p256::SecretKey::from_sec1_pem(&pem) {
        return Ok(CaKey::P256(k.into()));
    }
    bail!(
        "{}: not an Ed25519 or P-256 private key in PKCS#8 or SEC1 PEM",
        path.display()
    )
}

/// PKCS#8 PEM of a CA key.
pub fn ca_key_pem(key: &CaKey) -> Result<String> {
    let pem = match key {
        CaKey::Ed25519(k) => k.to_pkcs8_pem(Default::default()),
        CaKey::P256(k) => k.to_pkcs8_pem(Default::default()),
    }
    .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?;
    Ok(pem.to_string())
}

/// PKCS#8 PEM of an Ed25519 key.
pub fn ed25519_pem(key: &SigningKey) -> Result<String> {
    Ok(key
        .to_pkcs8_pem(Default::default())
        .map_err(|e| anyhow::anyhow!("encoding key: {e}"))?
        .to_string())
}

/// Writes a secret file readable by its owner only; refuses to overwrite.
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    #[cfg(unix)]
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    file.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}
