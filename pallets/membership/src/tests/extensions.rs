//! What a certificate's extensions allow: a trust anchor must be a CA that may sign
//! certificates; a member certificate must not be a CA and must allow digital signatures; a
//! critical extension drchain does not know refuses either (RFC 5280, 4.2).

use der::asn1::{BitString, OctetString};
use der::{Decode, Encode};
use ed25519_dalek::Signer as _;
use x509_cert::ext::pkix::{BasicConstraints, KeyUsage, KeyUsages};
use x509_cert::ext::Extension;

use super::*;

/// `der` with its extensions edited and signed again by `ca` (an Ed25519 CA), so that only the
/// edit can be the reason for a refusal.
fn edited(ca: &Ca, der: &[u8], edit: impl FnOnce(&mut Vec<Extension>)) -> Vec<u8> {
    let mut cert = x509_cert::Certificate::from_der(der).unwrap();
    let mut extensions = cert.tbs_certificate.extensions.take().unwrap_or_default();
    edit(&mut extensions);
    cert.tbs_certificate.extensions = Some(extensions);
    let tbs = cert.tbs_certificate.to_der().unwrap();
    let CaKey::Ed25519(k) = &ca.key else {
        panic!("an Ed25519 CA")
    };
    cert.signature = BitString::from_bytes(&k.sign(&tbs).to_bytes()).unwrap();
    cert.to_der().unwrap()
}

fn extension(oid: const_oid::ObjectIdentifier, critical: bool, value: Vec<u8>) -> Extension {
    Extension {
        extn_id: oid,
        critical,
        extn_value: OctetString::new(value).unwrap(),
    }
}

fn set(extensions: &mut Vec<Extension>, e: Extension) {
    extensions.retain(|x| x.extn_id != e.extn_id);
    extensions.push(e);
}

fn key_usage(usages: impl Into<der::flagset::FlagSet<KeyUsages>>) -> Extension {
    extension(
        const_oid::db::rfc5280::ID_CE_KEY_USAGE,
        true,
        KeyUsage(usages.into()).to_der().unwrap(),
    )
}

fn unknown_critical() -> Extension {
    // A private-enterprise OID no verifier knows, with a NULL value.
    extension(
        "1.3.6.1.4.1.99999.1".parse().unwrap(),
        true,
        vec![0x05, 0x00],
    )
}

#[test]
fn a_member_certificate_must_be_a_leaf_that_may_sign() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    let leaf = valid(&ca, &key(3));
    let as_ca = edited(&ca, &leaf, |x| {
        let bc = BasicConstraints {
            ca: true,
            path_len_constraint: None,
        };
        set(
            x,
            extension(
                const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS,
                true,
                bc.to_der().unwrap(),
            ),
        );
    });
    assert!(matches!(
        cert_error(admit(&mut s, 2, as_ca, MemberRole::Member)),
        CertError::MemberIsACertificateAuthority { .. }
    ));
    let encipher_only = edited(&ca, &leaf, |x| {
        set(x, key_usage(KeyUsages::KeyEncipherment))
    });
    assert!(matches!(
        cert_error(admit(&mut s, 2, encipher_only, MemberRole::Member)),
        CertError::KeyUsageForbids { .. }
    ));
    let unknown = edited(&ca, &leaf, |x| x.push(unknown_critical()));
    assert!(matches!(
        cert_error(admit(&mut s, 2, unknown, MemberRole::Member)),
        CertError::UnknownCriticalExtension { .. }
    ));
    // The same unknown extension, not critical, is ignored; so is a keyUsage that allows
    // signing among other uses.
    let tolerated = edited(&ca, &leaf, |x| {
        let mut e = unknown_critical();
        e.critical = false;
        x.push(e);
        set(
            x,
            key_usage(KeyUsages::DigitalSignature | KeyUsages::KeyEncipherment),
        );
    });
    admit(&mut s, 2, tolerated, MemberRole::Member).unwrap();
}

#[test]
fn a_trust_anchor_must_be_a_ca_that_may_sign_certificates() {
    let ca = ed_ca(50, "dev ca");
    let self_signed = |edit: &dyn Fn(&mut Vec<Extension>)| edited(&ca, &ca.der, edit);
    let no_cert_sign = self_signed(&|x| set(x, key_usage(KeyUsages::DigitalSignature)));
    assert!(matches!(
        x509::check_trust_anchor(&no_cert_sign),
        Err(CertError::KeyUsageForbids { .. })
    ));
    let unknown = self_signed(&|x| x.push(unknown_critical()));
    assert!(matches!(
        x509::check_trust_anchor(&unknown),
        Err(CertError::UnknownCriticalExtension { .. })
    ));
    let not_ca = self_signed(&|x| {
        x.retain(|e| e.extn_id != const_oid::db::rfc5280::ID_CE_BASIC_CONSTRAINTS)
    });
    assert!(matches!(
        x509::check_trust_anchor(&not_ca),
        Err(CertError::NotACertificateAuthority { .. })
    ));
    assert!(x509::check_trust_anchor(&ca.der).is_ok());
}
