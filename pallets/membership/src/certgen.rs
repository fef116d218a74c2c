//! Certificate creation for `drchain cert`, the dev chain specs and tests: a CA (Ed25519 or
//! ECDSA P-256) and member certificates carrying an Ed25519 subject key.
//!
//! Pure: times and serial numbers are parameters, so the same inputs give the same DER bytes
//! (Ed25519 signing is deterministic), which is how `chain-spec/local.json` is reproducible.

use std::str::FromStr;
use std::time::Duration;

use der::asn1::{BitString, GeneralizedTime};
use der::{DateTime, Decode, Encode};
use drchain_support::AccountId;
use signature::{Keypair, Signer};
use spki::{
    AlgorithmIdentifierOwned, DynSignatureAlgorithmIdentifier, EncodePublicKey,
    SignatureBitStringEncoding, SubjectPublicKeyInfoOwned,
};
use x509_cert::builder::{Builder, CertificateBuilder, Profile};
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::time::{Time, Validity};
use x509_cert::Certificate;

/// Why a certificate could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CertGenError {
    /// The subject is not an RFC 4514 name such as `CN=alice,OU=validator,O=drchain`.
    #[error("invalid subject {subject:?}: {reason}")]
    Subject {
        /// The subject given.
        subject: String,
        /// What the parser said.
        reason: String,
    },
    /// A time outside what X.509 can encode.
    #[error("invalid validity time {millis} ms: {reason}")]
    Time {
        /// The time given.
        millis: u64,
        reason: String,
    },
    /// The CA certificate given to `issue` does not parse.
    #[error("invalid CA certificate: {reason}")]
    CaCertificate {
        /// What the parser said.
        reason: String,
    },
    /// The subject key is not a valid Ed25519 point.
    #[error("invalid Ed25519 subject key")]
    SubjectKey,
    /// The builder failed.
    #[error("building the certificate failed: {reason}")]
    Build { reason: String },
}

fn build_err(e: impl std::fmt::Display) -> CertGenError {
    CertGenError::Build {
        reason: e.to_string(),
    }
}

/// A CA signing key.
#[derive(Debug, Clone)]
pub enum CaKey {
    Ed25519(ed25519_dalek::SigningKey),
    /// ECDSA over P-256 with SHA-256.
    P256(p256::ecdsa::SigningKey),
}

/// What goes into a certificate besides keys.
#[derive(Debug, Clone)]
pub struct CertParams {
    /// Subject, RFC 4514, e.g. `CN=alice,OU=validator,O=drchain`.
    pub subject: String,
    /// Serial number.
    pub serial: u64,
    /// notBefore, ms since the Unix epoch.
    pub not_before_ms: u64,
    /// notAfter, ms since the Unix epoch.
    pub not_after_ms: u64,
}

fn time(millis: u64) -> Result<Time, CertGenError> {
    let dt = DateTime::from_unix_duration(Duration::from_secs(millis / 1000)).map_err(|e| {
        CertGenError::Time {
            millis,
            reason: e.to_string(),
        }
    })?;
    Ok(Time::GeneralTime(GeneralizedTime::from_date_time(dt)))
}

fn name(subject: &str) -> Result<Name, CertGenError> {
    Name::from_str(subject).map_err(|e| CertGenError::Subject {
        subject: subject.to_string(),
        reason: e.to_string(),
    })
}

/// Adapts an Ed25519 key to the certificate builder, whose signature type must encode as a
/// BIT STRING (ed25519-dalek's does not implement that trait).
struct Ed25519Signer<'a>(&'a ed25519_dalek::SigningKey);

struct Ed25519BitSignature(ed25519_dalek::Signature);

impl SignatureBitStringEncoding for Ed25519BitSignature {
    fn to_bitstring(&self) -> der::Result<BitString> {
        BitString::from_bytes(&self.0.to_bytes())
    }
}

impl Keypair for Ed25519Signer<'_> {
    type VerifyingKey = ed25519_dalek::VerifyingKey;
    fn verifying_key(&self) -> Self::VerifyingKey {
        self.0.verifying_key()
    }
}

impl DynSignatureAlgorithmIdentifier for Ed25519Signer<'_> {
    fn signature_algorithm_identifier(&self) -> spki::Result<AlgorithmIdentifierOwned> {
        self.0.signature_algorithm_identifier()
    }
}

impl Signer<Ed25519BitSignature> for Ed25519Signer<'_> {
    fn try_sign(&self, msg: &[u8]) -> Result<Ed25519BitSignature, signature::Error> {
        Ok(Ed25519BitSignature(self.0.sign(msg)))
    }
}

fn build<S, Sig>(
    profile: Profile,
    params: &CertParams,
    spki: SubjectPublicKeyInfoOwned,
    signer: &S,
) -> Result<Vec<u8>, CertGenError>
where
    S: Keypair + DynSignatureAlgorithmIdentifier + Signer<Sig>,
    S::VerifyingKey: EncodePublicKey,
    Sig: SignatureBitStringEncoding,
{
    let validity = Validity {
        not_before: time(params.not_before_ms)?,
        not_after: time(params.not_after_ms)?,
    };
    let builder = CertificateBuilder::new(
        profile,
        SerialNumber::from(params.serial),
        validity,
        name(&params.subject)?,
        spki,
        signer,
    )
    .map_err(build_err)?;
    let cert: Certificate = builder.build::<Sig>().map_err(build_err)?;
    cert.to_der().map_err(build_err)
}

fn spki_of(key: &CaKey) -> Result<SubjectPublicKeyInfoOwned, CertGenError> {
    match key {
        CaKey::Ed25519(k) => SubjectPublicKeyInfoOwned::from_key(k.verifying_key()),
        CaKey::P256(k) => SubjectPublicKeyInfoOwned::from_key(*k.verifying_key()),
    }
    .map_err(build_err)
}

fn build_with(
    key: &CaKey,
    profile: Profile,
    params: &CertParams,
    spki: SubjectPublicKeyInfoOwned,
) -> Result<Vec<u8>, CertGenError> {
    match key {
        CaKey::Ed25519(k) => {
            build::<_, Ed25519BitSignature>(profile, params, spki, &Ed25519Signer(k))
        }
        CaKey::P256(k) => build::<_, p256::ecdsa::DerSignature>(profile, params, spki, k),
    }
}

/// A self-signed CA certificate (DER).
pub fn new_ca(key: &CaKey, params: &CertParams) -> Result<Vec<u8>, CertGenError> {
    let spki = spki_of(key)?;
    build_with(key, Profile::Root, params, spki)
}

/// A member certificate (DER) for `subject_key`, issued by the CA `ca_der` with `ca_key`.
pub fn issue(
    ca_key: &CaKey,
    ca_der: &[u8],
    subject_key: &AccountId,
    params: &CertParams,
) -> Result<Vec<u8>, CertGenError> {
    let key = ed25519_dalek::VerifyingKey::from_bytes(&subject_key.0)
        .map_err(|_| CertGenError::SubjectKey)?;
    let spki = SubjectPublicKeyInfoOwned::from_key(key).map_err(build_err)?;
    issue_for_key(ca_key, ca_der, spki, params)
}

/// A leaf certificate for any subject key (tests use it to make certificates drchain refuses).
pub fn issue_for_key(
    ca_key: &CaKey,
    ca_der: &[u8],
    spki: SubjectPublicKeyInfoOwned,
    params: &CertParams,
) -> Result<Vec<u8>, CertGenError> {
    let ca = Certificate::from_der(ca_der).map_err(|e| CertGenError::CaCertificate {
        reason: e.to_string(),
    })?;
    let profile = Profile::Leaf {
        issuer: ca.tbs_certificate.subject.clone(),
        enable_key_agreement: false,
        enable_key_encipherment: false,
    };
    build_with(ca_key, profile, params, spki)
}

/// PEM text of a DER certificate.
pub fn to_pem(der: &[u8]) -> Result<String, CertGenError> {
    use der::EncodePem;
    let cert = Certificate::from_der(der).map_err(build_err)?;
    cert.to_pem(der::pem::LineEnding::LF).map_err(build_err)
}
