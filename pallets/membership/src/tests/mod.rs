use drchain_support::{BlockInfo, Env, Hooks, MemoryState, Origin, Overlay};
use ed25519_dalek::SigningKey;
use spki::SubjectPublicKeyInfoOwned;

use super::*;
use crate::certgen::{self, CaKey, CertParams};

mod extensions;

const DAY: u64 = 86_400_000;
const T0: u64 = 1_767_225_600_000; // 2026-01-01

fn key(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn params(subject: &str, serial: u64, from: u64, to: u64) -> CertParams {
    CertParams {
        subject: subject.into(),
        serial,
        not_before_ms: from,
        not_after_ms: to,
    }
}

struct Ca {
    key: CaKey,
    der: Vec<u8>,
}

fn ed_ca(seed: u8, name: &str) -> Ca {
    let key = CaKey::Ed25519(key(seed));
    let der = certgen::new_ca(
        &key,
        &params(
            &format!("CN={name},O=drchain"),
            1,
            T0 - DAY,
            T0 + 3650 * DAY,
        ),
    )
    .unwrap();
    Ca { key, der }
}

fn p256_ca() -> Ca {
    let sk = p256::ecdsa::SigningKey::from_slice(&[9u8; 32]).unwrap();
    let key = CaKey::P256(sk);
    let der = certgen::new_ca(
        &key,
        &params("CN=p256 ca,O=drchain", 1, T0 - DAY, T0 + 3650 * DAY),
    )
    .unwrap();
    Ca { key, der }
}

fn cert(ca: &Ca, who: &SigningKey, ou: &str, from: u64, to: u64) -> Vec<u8> {
    let subject = format!("CN=node,OU={ou},O=drchain");
    certgen::issue(
        &ca.key,
        &ca.der,
        &AccountId::from(who),
        &params(&subject, 7, from, to),
    )
    .unwrap()
}

fn valid(ca: &Ca, who: &SigningKey) -> Vec<u8> {
    cert(ca, who, "validator", T0 - DAY, T0 + 365 * DAY)
}

/// A chain whose genesis pins `ca`, with validator key(1) and admins key(100), key(101).
fn genesis(ca: &Ca, threshold: u32) -> MemoryState {
    let mut base = MemoryState::new();
    let mut o = Overlay::new(&base);
    let config = GenesisConfig {
        trust_anchors: vec![ca.der.clone()],
        admins: vec![AccountId::from(&key(100)), AccountId::from(&key(101))],
        admin_threshold: threshold,
        members: vec![(valid(ca, &key(1)), MemberRole::Validator)],
    };
    build_genesis(&mut o, &config, T0).unwrap();
    let changes = o.into_changes();
    base.commit(changes);
    base
}

fn block(number: u64) -> BlockInfo {
    BlockInfo {
        number,
        timestamp: T0 + number * 1000,
        live_now: number * 1000,
        ..Default::default()
    }
}

/// Runs `f` in block `number` and commits its writes; returns its result and events.
fn run<R>(
    state: &mut MemoryState,
    number: u64,
    f: impl FnOnce(&mut Env<'_, '_, Event>) -> R,
) -> (R, Vec<Event>) {
    let mut events = vec![];
    let (r, changes) = {
        let mut o = Overlay::new(state);
        let r = {
            let mut env = Env::new(&mut o, block(number), &mut events);
            Pallet::on_initialize(&mut env);
            f(&mut env)
        };
        (r, o.into_changes())
    };
    state.commit(changes);
    (r, events)
}

fn admit(
    state: &mut MemoryState,
    number: u64,
    der: Vec<u8>,
    role: MemberRole,
) -> Result<(), Error> {
    run(state, number, |env| {
        dispatch(
            env,
            Origin::Admin,
            Call::Admit {
                certificate: der,
                role,
            },
        )
    })
    .0
}

fn cert_error(r: Result<(), Error>) -> CertError {
    match r {
        Err(Error::Certificate(e)) => e,
        other => panic!("expected a certificate error, got {other:?}"),
    }
}

#[test]
fn admitted_validator_joins_the_set_after_the_delay() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    let alice = AccountId::from(&key(1));
    let bob = AccountId::from(&key(2));
    let (r, events) = run(&mut s, 5, |env| {
        dispatch(
            env,
            Origin::Admin,
            Call::Admit {
                certificate: valid(&ca, &key(2)),
                role: MemberRole::Validator,
            },
        )
    });
    r.unwrap();
    assert!(events.contains(&Event::ValidatorSetScheduled {
        effective_at: 7,
        validators: sorted(vec![alice, bob])
    }));
    let o = Overlay::new(&s);
    assert!(is_admitted(&o, &bob, T0 + 5000));
    assert_eq!(validators(&o), vec![alice]);
    assert_eq!(validators_at(&o, 6), vec![alice]);
    assert_eq!(validators_at(&o, 7), sorted(vec![alice, bob]));
    let (_, events) = run(&mut s, 7, |_| ());
    assert_eq!(
        events,
        vec![Event::ValidatorSetChanged {
            validators: sorted(vec![alice, bob])
        }]
    );
    assert_eq!(validators(&Overlay::new(&s)), sorted(vec![alice, bob]));
}

fn sorted(mut v: Vec<AccountId>) -> Vec<AccountId> {
    v.sort();
    v
}

#[test]
fn p256_ca_certificates_are_accepted() {
    let ca = p256_ca();
    let s = genesis(&ca, 1);
    assert!(is_admitted(
        &Overlay::new(&s),
        &AccountId::from(&key(1)),
        T0
    ));
}

#[test]
fn refused_certificates_get_distinct_errors() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    let foreign = ed_ca(51, "other ca");
    let e = cert_error(admit(
        &mut s,
        2,
        valid(&foreign, &key(3)),
        MemberRole::Member,
    ));
    assert!(matches!(e, CertError::UnknownIssuer { .. }), "{e:?}");

    // Same name as the pinned CA, different key: the signature check catches it.
    let impostor = ed_ca(52, "dev ca");
    let e = cert_error(admit(
        &mut s,
        2,
        valid(&impostor, &key(3)),
        MemberRole::Member,
    ));
    assert_eq!(e, CertError::BadSignature);

    let expired = cert(&ca, &key(3), "member", T0 - 10 * DAY, T0 - DAY);
    assert!(matches!(
        cert_error(admit(&mut s, 2, expired, MemberRole::Member)),
        CertError::Expired { .. }
    ));

    let future = cert(&ca, &key(3), "member", T0 + 10 * DAY, T0 + 20 * DAY);
    assert!(matches!(
        cert_error(admit(&mut s, 2, future, MemberRole::Member)),
        CertError::NotYetValid { .. }
    ));

    let p256_key = p256::ecdsa::SigningKey::from_slice(&[5u8; 32]).unwrap();
    let spki = SubjectPublicKeyInfoOwned::from_key(*p256_key.verifying_key()).unwrap();
    let non_ed = certgen::issue_for_key(
        &ca.key,
        &ca.der,
        spki,
        &params("CN=x", 3, T0 - DAY, T0 + DAY),
    )
    .unwrap();
    assert!(matches!(
        cert_error(admit(&mut s, 2, non_ed, MemberRole::Member)),
        CertError::NotEd25519SubjectKey { .. }
    ));

    assert!(matches!(
        cert_error(admit(
            &mut s,
            2,
            b"not a certificate".to_vec(),
            MemberRole::Member
        )),
        CertError::Malformed { .. }
    ));

    let mut tampered = valid(&ca, &key(3));
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    assert_eq!(
        cert_error(admit(&mut s, 2, tampered, MemberRole::Member)),
        CertError::BadSignature
    );

    // Revoked: admit, revoke, then the same certificate again.
    let c = valid(&ca, &key(4));
    admit(&mut s, 3, c.clone(), MemberRole::Member).unwrap();
    let who = AccountId::from(&key(4));
    run(&mut s, 4, |env| {
        dispatch(
            env,
            Origin::Admin,
            Call::Revoke {
                account: who,
                reason: "lost".into(),
            },
        )
    })
    .0
    .unwrap();
    assert!(!is_admitted(&Overlay::new(&s), &who, T0 + 4000));
    assert!(matches!(
        cert_error(admit(&mut s, 5, c, MemberRole::Member)),
        CertError::Revoked { .. }
    ));
}

#[test]
fn admission_needs_admin_origin_and_a_granted_role() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    let r = run(&mut s, 2, |env| {
        dispatch(
            env,
            Origin::Signed(AccountId::from(&key(1))),
            Call::Admit {
                certificate: valid(&ca, &key(3)),
                role: MemberRole::Member,
            },
        )
    })
    .0;
    assert!(matches!(r, Err(Error::BadOrigin(_))));
    let member_only = cert(&ca, &key(3), "member", T0 - DAY, T0 + DAY);
    assert_eq!(
        admit(&mut s, 2, member_only, MemberRole::Validator),
        Err(Error::RoleNotGranted {
            granted: MemberRole::Member,
            requested: MemberRole::Validator
        })
    );
}

#[test]
fn the_last_validator_cannot_be_revoked() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    let alice = AccountId::from(&key(1));
    let r = run(&mut s, 2, |env| {
        dispatch(
            env,
            Origin::Admin,
            Call::Revoke {
                account: alice,
                reason: "x".into(),
            },
        )
    })
    .0;
    assert_eq!(r, Err(Error::NoValidatorsLeft));
}

#[test]
fn rotation_moves_membership_and_validator_role_to_the_new_key() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    admit(&mut s, 2, valid(&ca, &key(2)), MemberRole::Validator).unwrap();
    let old = AccountId::from(&key(2));
    let new = AccountId::from(&key(22));
    let (r, events) = run(&mut s, 3, |env| {
        dispatch(
            env,
            Origin::Signed(old),
            Call::RotateCertificate {
                certificate: valid(&ca, &key(22)),
            },
        )
    });
    r.unwrap();
    assert!(events.contains(&Event::CertificateRotated { old, new }));
    let o = Overlay::new(&s);
    assert!(!is_admitted(&o, &old, T0 + 3000));
    assert!(is_admitted(&o, &new, T0 + 3000));
    assert_eq!(
        validators_at(&o, 5),
        sorted(vec![AccountId::from(&key(1)), new])
    );
}

#[test]
fn admin_calls_need_the_threshold_of_approvals() {
    let ca = ed_ca(50, "dev ca");
    let s = genesis(&ca, 2);
    let mut o = Overlay::new(&s);
    let a = AccountId::from(&key(100));
    let b = AccountId::from(&key(101));
    let (hash, first) = propose(&mut o, a, b"call".to_vec(), 1).unwrap();
    assert_eq!(
        first,
        Approval::Pending {
            approvals: 1,
            threshold: 2
        }
    );
    assert_eq!(
        approve(&mut o, a, hash),
        Err(Error::AlreadyApproved { account: a })
    );
    let outsider = AccountId::from(&key(1));
    assert_eq!(
        approve(&mut o, outsider, hash),
        Err(Error::NotAnAdmin { account: outsider })
    );
    assert_eq!(
        approve(&mut o, b, hash),
        Ok(Approval::Approved {
            call: b"call".to_vec()
        })
    );
    assert_eq!(
        approve(&mut o, b, hash),
        Err(Error::UnknownProposal { proposal: hash })
    );
}

#[test]
fn a_ca_in_use_cannot_be_unpinned() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    let fingerprint = drchain_support::blake3_hash(&ca.der);
    let r = run(&mut s, 2, |env| {
        dispatch(env, Origin::Admin, Call::RemoveTrustAnchor { fingerprint })
    })
    .0;
    assert_eq!(r, Err(Error::TrustAnchorInUse { members: 1 }));
}

#[test]
fn genesis_errors_name_the_field() {
    let ca = ed_ca(50, "dev ca");
    let foreign = ed_ca(51, "other");
    let base = MemoryState::new();
    let mut o = Overlay::new(&base);
    let config = GenesisConfig {
        trust_anchors: vec![ca.der.clone()],
        admins: vec![AccountId::from(&key(100))],
        admin_threshold: 1,
        members: vec![
            (valid(&ca, &key(1)), MemberRole::Validator),
            (valid(&foreign, &key(2)), MemberRole::Member),
        ],
    };
    let e = build_genesis(&mut o, &config, T0).unwrap_err();
    assert_eq!(e.field, "members[1].certificate");
}

#[test]
fn members_of_an_expired_ca_are_no_longer_admitted() {
    let key_ca = CaKey::Ed25519(key(60));
    let der = certgen::new_ca(&key_ca, &params("CN=short ca", 1, T0 - DAY, T0 + 10 * DAY)).unwrap();
    let ca = Ca { key: key_ca, der };
    let s = genesis(&ca, 1);
    let alice = AccountId::from(&key(1));
    assert!(is_admitted(&Overlay::new(&s), &alice, T0 + 5 * DAY));
    // alice's own certificate runs for a year, but its CA's only ten days.
    assert!(!is_admitted(&Overlay::new(&s), &alice, T0 + 20 * DAY));
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    /// Certificates are outside input: any corruption is refused with an error (never a
    /// panic), and whatever still verifies names the same key and validity as the original.
    #[test]
    fn corrupted_certificates_never_panic_or_change_meaning(
        flips in proptest::collection::vec((proptest::prelude::any::<usize>(), 1u8..=255), 1..4),
        truncate in proptest::option::of(proptest::prelude::any::<usize>()),
    ) {
        let ca = ed_ca(50, "dev ca");
        let anchors = vec![x509::parse(&ca.der).unwrap()];
        let original = valid(&ca, &key(3));
        let mut der = original.clone();
        for (at, mask) in flips {
            let i = at % der.len();
            der[i] ^= mask;
        }
        if let Some(t) = truncate {
            der.truncate(t % (der.len() + 1));
        }
        if let Ok(v) = x509::verify_member(&der, &anchors, T0, |_| false) {
            proptest::prop_assert_eq!(v.account, AccountId::from(&key(3)));
            let o = x509::parse(&original).unwrap();
            proptest::prop_assert_eq!((v.certificate.not_before, v.certificate.not_after), (o.not_before, o.not_after));
        }
        let _ = x509::certificate_der(&der);
        let _ = x509::check_trust_anchor(&der);
    }
}

#[test]
fn renewal_with_the_same_key_revokes_only_the_old_certificate() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    let alice = AccountId::from(&key(1));
    let current = valid(&ca, &key(1));
    let rotate = |c: Vec<u8>| Call::RotateCertificate { certificate: c };
    let r = run(&mut s, 2, |env| {
        dispatch(env, Origin::Signed(alice), rotate(current.clone()))
    })
    .0;
    assert_eq!(r, Err(Error::SameCertificate));
    let renewed = cert(&ca, &key(1), "validator", T0, T0 + 2 * 365 * DAY);
    let (r, events) = run(&mut s, 3, |env| {
        dispatch(env, Origin::Signed(alice), rotate(renewed.clone()))
    });
    r.unwrap();
    assert!(events.contains(&Event::CertificateRotated {
        old: alice,
        new: alice
    }));
    let o = Overlay::new(&s);
    assert_eq!(member(&o, &alice).unwrap().not_after, T0 + 2 * 365 * DAY);
    assert!(is_admitted(&o, &alice, T0 + 400 * DAY));
    let e = verify_certificate(&o, &current, T0 + DAY).unwrap_err();
    assert!(
        matches!(e, Error::Certificate(CertError::Revoked { .. })),
        "{e:?}"
    );
    assert!(verify_certificate(&o, &renewed, T0 + DAY).is_ok());
}

/// Revocation is of the member, not of one certificate: a second valid certificate for a
/// revoked key brings it back neither through another member's rotation nor through the
/// admins (a revoked key counts as compromised; the holder gets a new key).
#[test]
fn a_revoked_key_is_never_a_member_again() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    admit(&mut s, 2, valid(&ca, &key(2)), MemberRole::Member).unwrap();
    admit(&mut s, 2, valid(&ca, &key(3)), MemberRole::Member).unwrap();
    let (accomplice, revoked) = (AccountId::from(&key(2)), AccountId::from(&key(3)));
    run(&mut s, 3, |env| {
        dispatch(
            env,
            Origin::Admin,
            Call::Revoke {
                account: revoked,
                reason: "key leaked".into(),
            },
        )
    })
    .0
    .unwrap();
    let second = cert(&ca, &key(3), "member", T0, T0 + 2 * 365 * DAY);
    let r = run(&mut s, 4, |env| {
        dispatch(
            env,
            Origin::Signed(accomplice),
            Call::RotateCertificate {
                certificate: second.clone(),
            },
        )
    })
    .0;
    assert_eq!(
        r,
        Err(Error::MemberWasRevoked {
            account: revoked,
            at: 3
        })
    );
    assert_eq!(
        admit(&mut s, 5, second, MemberRole::Member),
        Err(Error::MemberWasRevoked {
            account: revoked,
            at: 3
        })
    );
    let o = Overlay::new(&s);
    assert!(!is_admitted(&o, &revoked, T0 + 5000));
    assert!(is_admitted(&o, &accomplice, T0 + 5000));
}

/// One rule decides both network admission and the validator set: a validator whose
/// certificate expired leaves the set (two blocks after the first block past its expiry), so
/// validators issued together and expiring together do not take the quorum with them. The
/// last validators are never removed (the chain would have no one to finalize a renewal).
#[test]
fn expired_validators_leave_the_set_but_never_the_last() {
    let ca = ed_ca(50, "dev ca");
    let mut s = genesis(&ca, 1);
    // key(2) expires at block 10's time, key(3) at block 20's; key(1) is valid for a year.
    admit(
        &mut s,
        2,
        cert(&ca, &key(2), "validator", T0 - DAY, T0 + 10_000),
        MemberRole::Validator,
    )
    .unwrap();
    admit(
        &mut s,
        2,
        cert(&ca, &key(3), "validator", T0 - DAY, T0 + 20_000),
        MemberRole::Validator,
    )
    .unwrap();
    let all = sorted(vec![
        AccountId::from(&key(1)),
        AccountId::from(&key(2)),
        AccountId::from(&key(3)),
    ]);
    let mut scheduled = vec![];
    for number in 3..=25 {
        let (_, events) = run(&mut s, number, |_| ());
        scheduled.extend(events.into_iter().filter_map(|e| match e {
            Event::ValidatorSetScheduled { effective_at, .. } => Some(effective_at),
            _ => None,
        }));
        let o = Overlay::new(&s);
        // Admitted in block 2: in the set from block 4.
        let expected = match number {
            3 => vec![AccountId::from(&key(1))],
            4..=12 => all.clone(),
            13..=22 => sorted(vec![AccountId::from(&key(1)), AccountId::from(&key(3))]),
            _ => vec![AccountId::from(&key(1))],
        };
        assert_eq!(validators(&o), expected, "at block {number}");
    }
    assert_eq!(scheduled, vec![13, 23]);
    // The last validator's certificate expires too: it stays, the chain can still renew it.
    for number in 26..=30 {
        run(&mut s, 400 * 86_400 + number, |_| ());
    }
    assert_eq!(
        validators(&Overlay::new(&s)),
        vec![AccountId::from(&key(1))]
    );
}
