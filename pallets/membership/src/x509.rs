//! X.509 checks for admission: a member's certificate must chain to a pinned CA (Ed25519 or
//! ECDSA P-256 signature), be valid at block time, carry an Ed25519 subject key (the member's
//! account and network identity) and not be revoked.
//!
//! Everything here is pure: it parses bytes and checks signatures, and "now" is block time.

use const_oid::db::{rfc4519, rfc5280, rfc5912, rfc8410};
use der::{Decode, DecodePem, Encode};
use drchain_support::{blake3_hash, AccountId, Moment, H256};
use parity_scale_codec::{Decode as ScaleDecode, Encode as ScaleEncode};
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::name::Name;
use x509_cert::Certificate;

use crate::MemberRole;

/// Why a certificate is refused. Each case is distinct so operators can tell what to fix.
#[derive(Debug, Clone, PartialEq, Eq, ScaleEncode, ScaleDecode, thiserror::Error)]
pub enum CertError {
    /// Not a DER (or PEM) X.509 certificate.
    #[error("malformed certificate: {reason}")]
    Malformed {
        /// What the parser said.
        reason: String,
    },
    /// The issuer is not one of the pinned CAs.
    #[error("issuer {issuer} is not a pinned CA")]
    UnknownIssuer {
        /// The issuer's distinguished name.
        issuer: String,
    },
    /// The CA's signature over the certificate does not verify.
    #[error("the CA signature does not verify")]
    BadSignature,
    /// A signature algorithm other than Ed25519 or ECDSA P-256 with SHA-256.
    #[error("unsupported signature algorithm {oid}: only Ed25519 and ECDSA P-256/SHA-256 CAs are supported")]
    UnsupportedSignatureAlgorithm {
        /// The algorithm's OID.
        oid: String,
    },
    /// The subject key is not Ed25519.
    #[error("subject key algorithm {algorithm} is not Ed25519: a member's key must be Ed25519")]
    NotEd25519SubjectKey {
        /// The key algorithm's OID.
        algorithm: String,
    },
    /// Block time is before the certificate's notBefore.
    #[error("certificate is not valid before {not_before} ms (block time {now} ms)")]
    NotYetValid {
        /// notBefore, ms since the Unix epoch.
        not_before: Moment,
        /// Block time.
        now: Moment,
    },
    /// Block time is after the certificate's notAfter.
    #[error("certificate expired at {not_after} ms (block time {now} ms)")]
    Expired {
        /// notAfter, ms since the Unix epoch.
        not_after: Moment,
        /// Block time.
        now: Moment,
    },
    /// The issuing CA certificate itself is outside its validity window.
    #[error("the issuing CA {issuer} is not valid at block time {now} ms")]
    IssuerNotValid {
        /// The CA's name.
        issuer: String,
        /// Block time.
        now: Moment,
    },
    /// A trust anchor without `basicConstraints cA=TRUE`.
    #[error("certificate {subject} is not a CA (basicConstraints cA is not TRUE)")]
    NotACertificateAuthority {
        /// The certificate's subject.
        subject: String,
    },
    /// A member certificate with `basicConstraints cA=TRUE`: a CA's key is not a member's.
    #[error("certificate {subject} is a CA (basicConstraints cA=TRUE); a member certificate must be a leaf")]
    MemberIsACertificateAuthority {
        /// The certificate's subject.
        subject: String,
    },
    /// Its keyUsage extension does not allow what the certificate is for.
    #[error("certificate {subject}: keyUsage does not allow {needed}")]
    KeyUsageForbids {
        /// The certificate's subject.
        subject: String,
        /// The usage it needs (`digitalSignature` for a member, `keyCertSign` for a CA).
        needed: String,
    },
    /// A critical extension drchain does not process (RFC 5280 says to refuse it).
    #[error("certificate {subject} has a critical extension drchain does not know: {oid}")]
    UnknownCriticalExtension {
        /// The certificate's subject.
        subject: String,
        /// The extension's OID.
        oid: String,
    },
    /// The certificate was revoked.
    #[error("certificate {fingerprint} was revoked")]
    Revoked {
        /// blake3 of its DER.
        fingerprint: H256,
    },
}

fn malformed(e: impl std::fmt::Display) -> CertError {
    CertError::Malformed {
        reason: e.to_string(),
    }
}

/// What a certificate is offered as (its extensions must allow it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// A pinned CA.
    TrustAnchor,
    /// A member's own certificate.
    Member,
}

/// Extensions drchain processes (basicConstraints, keyUsage) or that constrain nothing it
/// relies on (key identifiers, names, extendedKeyUsage: a member's key is used for drchain's
/// own signatures, not for TLS), so a certificate may mark them critical. Any other critical
/// extension (name or policy constraints, say) would be a rule drchain cannot honour.
const KNOWN_EXTENSIONS: [const_oid::ObjectIdentifier; 6] = [
    rfc5280::ID_CE_BASIC_CONSTRAINTS,
    rfc5280::ID_CE_KEY_USAGE,
    rfc5280::ID_CE_EXT_KEY_USAGE,
    rfc5280::ID_CE_SUBJECT_KEY_IDENTIFIER,
    rfc5280::ID_CE_AUTHORITY_KEY_IDENTIFIER,
    rfc5280::ID_CE_SUBJECT_ALT_NAME,
];

/// A parsed certificate with the facts admission needs.
#[derive(Debug, Clone)]
pub struct ParsedCertificate {
    /// The DER bytes.
    pub der: Vec<u8>,
    /// blake3 of the DER bytes.
    pub fingerprint: H256,
    /// Subject distinguished name (RFC 4514).
    pub subject: String,
    /// Issuer distinguished name (RFC 4514).
    pub issuer: String,
    /// notBefore, ms.
    pub not_before: Moment,
    /// notAfter, ms.
    pub not_after: Moment,
    /// Serial number, hex.
    pub serial: String,
    /// The role named in the subject's OU (`validator` or `member`), if any.
    pub granted_role: Option<MemberRole>,
    cert: Certificate,
}

/// Reads a certificate from PEM text or DER bytes.
pub fn certificate_der(bytes: &[u8]) -> Result<Vec<u8>, CertError> {
    if bytes.starts_with(b"-----BEGIN") {
        let text = std::str::from_utf8(bytes).map_err(malformed)?;
        let cert = Certificate::from_pem(text).map_err(malformed)?;
        cert.to_der().map_err(malformed)
    } else {
        Ok(bytes.to_vec())
    }
}

/// Parses a DER certificate.
pub fn parse(der: &[u8]) -> Result<ParsedCertificate, CertError> {
    let cert = Certificate::from_der(der).map_err(malformed)?;
    let tbs = &cert.tbs_certificate;
    let granted_role = organizational_unit(&tbs.subject).and_then(|ou| match ou.as_str() {
        "validator" => Some(MemberRole::Validator),
        "member" => Some(MemberRole::Member),
        _ => None,
    });
    Ok(ParsedCertificate {
        der: der.to_vec(),
        fingerprint: blake3_hash(der),
        subject: tbs.subject.to_string(),
        issuer: tbs.issuer.to_string(),
        not_before: millis(tbs.validity.not_before),
        not_after: millis(tbs.validity.not_after),
        serial: hex::encode(tbs.serial_number.as_bytes()),
        granted_role,
        cert,
    })
}

fn millis(t: x509_cert::time::Time) -> Moment {
    u64::try_from(t.to_unix_duration().as_millis()).unwrap_or(u64::MAX)
}

fn organizational_unit(name: &Name) -> Option<String> {
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .find(|atv| atv.oid == rfc4519::OU)
        .and_then(|atv| {
            atv.value.decode_as::<String>().ok().or_else(|| {
                atv.value
                    .decode_as::<der::asn1::PrintableStringRef<'_>>()
                    .ok()
                    .map(|s| s.to_string())
            })
        })
}

impl ParsedCertificate {
    /// The Ed25519 subject key as an account.
    pub fn ed25519_subject(&self) -> Result<AccountId, CertError> {
        let spki = &self.cert.tbs_certificate.subject_public_key_info;
        if spki.algorithm.oid != rfc8410::ID_ED_25519 {
            return Err(CertError::NotEd25519SubjectKey {
                algorithm: spki.algorithm.oid.to_string(),
            });
        }
        let raw: [u8; 32] = spki
            .subject_public_key
            .as_bytes()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| malformed("Ed25519 subject key is not 32 bytes"))?;
        ed25519_dalek::VerifyingKey::from_bytes(&raw).map_err(malformed)?;
        Ok(AccountId(raw))
    }

    /// Whether `basicConstraints` says this is a CA.
    pub fn is_ca(&self) -> bool {
        self.cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == rfc5280::ID_CE_BASIC_CONSTRAINTS)
            .and_then(|e| BasicConstraints::from_der(e.extn_value.as_bytes()).ok())
            .is_some_and(|bc| bc.ca)
    }

    /// The decoded extension `oid`, if present; a present one that does not decode is
    /// malformed (never read as absent: an unreadable basicConstraints could hide cA=TRUE).
    fn extension<T: for<'a> Decode<'a>>(
        &self,
        oid: const_oid::ObjectIdentifier,
    ) -> Result<Option<T>, CertError> {
        self.cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.extn_id == oid)
            .map(|e| T::from_der(e.extn_value.as_bytes()).map_err(malformed))
            .transpose()
    }

    /// Checks what the extensions allow for `purpose` (RFC 5280, 4.2): a critical extension
    /// drchain does not know refuses the certificate; basicConstraints must say CA for an
    /// anchor and must not for a member; a keyUsage, when present, must allow `keyCertSign`
    /// for an anchor and `digitalSignature` for a member (its key signs transactions, votes
    /// and the network handshake).
    pub fn check_extensions(&self, purpose: Purpose) -> Result<(), CertError> {
        if let Some(e) = self
            .cert
            .tbs_certificate
            .extensions
            .iter()
            .flatten()
            .find(|e| e.critical && !KNOWN_EXTENSIONS.contains(&e.extn_id))
        {
            return Err(CertError::UnknownCriticalExtension {
                subject: self.subject.clone(),
                oid: e.extn_id.to_string(),
            });
        }
        let ca = self
            .extension::<BasicConstraints>(rfc5280::ID_CE_BASIC_CONSTRAINTS)?
            .is_some_and(|bc| bc.ca);
        let usage = self.extension::<KeyUsage>(rfc5280::ID_CE_KEY_USAGE)?;
        let (needed, name) = match purpose {
            Purpose::TrustAnchor if !ca => {
                return Err(CertError::NotACertificateAuthority {
                    subject: self.subject.clone(),
                })
            }
            Purpose::Member if ca => {
                return Err(CertError::MemberIsACertificateAuthority {
                    subject: self.subject.clone(),
                })
            }
            Purpose::TrustAnchor => (KeyUsages::KeyCertSign, "keyCertSign"),
            Purpose::Member => (KeyUsages::DigitalSignature, "digitalSignature"),
        };
        if usage.is_some_and(|u| !u.0.contains(needed)) {
            return Err(CertError::KeyUsageForbids {
                subject: self.subject.clone(),
                needed: name.into(),
            });
        }
        Ok(())
    }

    /// Checks the validity window against `now`.
    pub fn check_validity(&self, now: Moment) -> Result<(), CertError> {
        if now < self.not_before {
            return Err(CertError::NotYetValid {
                not_before: self.not_before,
                now,
            });
        }
        if now > self.not_after {
            return Err(CertError::Expired {
                not_after: self.not_after,
                now,
            });
        }
        Ok(())
    }

    /// Whether `issuer` (by name) issued this certificate.
    fn named_issuer_is(&self, issuer: &ParsedCertificate) -> bool {
        self.cert.tbs_certificate.issuer == issuer.cert.tbs_certificate.subject
    }

    /// Verifies `issuer`'s signature over this certificate.
    pub fn verify_signed_by(&self, issuer: &ParsedCertificate) -> Result<(), CertError> {
        let tbs = self.cert.tbs_certificate.to_der().map_err(malformed)?;
        let sig = self
            .cert
            .signature
            .as_bytes()
            .ok_or_else(|| malformed("signature has unused bits"))?;
        let alg = self.cert.signature_algorithm.oid;
        let ca_key = &issuer.cert.tbs_certificate.subject_public_key_info;
        let ca_key_bytes = ca_key
            .subject_public_key
            .as_bytes()
            .ok_or_else(|| malformed("CA key has unused bits"))?;
        if alg == rfc8410::ID_ED_25519 {
            if ca_key.algorithm.oid != rfc8410::ID_ED_25519 {
                return Err(CertError::BadSignature);
            }
            let key: [u8; 32] = ca_key_bytes
                .try_into()
                .map_err(|_| CertError::BadSignature)?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&key)
                .map_err(|_| CertError::BadSignature)?;
            let sig =
                ed25519_dalek::Signature::from_slice(sig).map_err(|_| CertError::BadSignature)?;
            key.verify_strict(&tbs, &sig)
                .map_err(|_| CertError::BadSignature)
        } else if alg == rfc5912::ECDSA_WITH_SHA_256 {
            use p256::ecdsa::signature::Verifier;
            let curve_ok = ca_key.algorithm.oid == rfc5912::ID_EC_PUBLIC_KEY
                && ca_key
                    .algorithm
                    .parameters
                    .as_ref()
                    .and_then(|p| p.decode_as::<const_oid::ObjectIdentifier>().ok())
                    == Some(rfc5912::SECP_256_R_1);
            if !curve_ok {
                return Err(CertError::UnsupportedSignatureAlgorithm {
                    oid: format!("{alg} with a non-P-256 CA key"),
                });
            }
            let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(ca_key_bytes)
                .map_err(|_| CertError::BadSignature)?;
            let sig = p256::ecdsa::Signature::from_der(sig).map_err(|_| CertError::BadSignature)?;
            key.verify(&tbs, &sig).map_err(|_| CertError::BadSignature)
        } else {
            Err(CertError::UnsupportedSignatureAlgorithm {
                oid: alg.to_string(),
            })
        }
    }
}

/// Checks a certificate offered as a trust anchor: a parseable CA certificate, self-signed ones
/// with a valid self-signature.
pub fn check_trust_anchor(der: &[u8]) -> Result<ParsedCertificate, CertError> {
    let ca = parse(der)?;
    ca.check_extensions(Purpose::TrustAnchor)?;
    if ca.named_issuer_is(&ca) {
        ca.verify_signed_by(&ca)?;
    }
    Ok(ca)
}

/// A member certificate that passed every check.
#[derive(Debug, Clone)]
pub struct VerifiedMember {
    pub certificate: ParsedCertificate,
    /// Its Ed25519 subject key.
    pub account: AccountId,
    /// Fingerprint of the pinned CA that issued it.
    pub anchor: H256,
}

/// Verifies a member certificate against the pinned CAs at block time `now`.
///
/// `is_revoked` answers whether a certificate fingerprint was revoked.
pub fn verify_member(
    der: &[u8],
    anchors: &[ParsedCertificate],
    now: Moment,
    is_revoked: impl Fn(&H256) -> bool,
) -> Result<VerifiedMember, CertError> {
    let cert = parse(der)?;
    if is_revoked(&cert.fingerprint) {
        return Err(CertError::Revoked {
            fingerprint: cert.fingerprint,
        });
    }
    let issuers: Vec<&ParsedCertificate> = anchors
        .iter()
        .filter(|ca| cert.named_issuer_is(ca))
        .collect();
    if issuers.is_empty() {
        return Err(CertError::UnknownIssuer {
            issuer: cert.issuer.clone(),
        });
    }
    // Several pinned CAs may share a name (a CA renewed with a new key): any valid one will do.
    let mut last_err = CertError::BadSignature;
    let mut anchor = None;
    for ca in issuers {
        match cert.verify_signed_by(ca) {
            Ok(()) => {
                if ca.check_validity(now).is_err() {
                    last_err = CertError::IssuerNotValid {
                        issuer: ca.subject.clone(),
                        now,
                    };
                    continue;
                }
                anchor = Some(ca.fingerprint);
                break;
            }
            Err(e) => last_err = e,
        }
    }
    let anchor = anchor.ok_or(last_err)?;
    cert.check_extensions(Purpose::Member)?;
    let account = cert.ed25519_subject()?;
    cert.check_validity(now)?;
    Ok(VerifiedMember {
        certificate: cert,
        account,
        anchor,
    })
}
