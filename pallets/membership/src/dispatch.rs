//! Executing the pallet's calls, and the member and validator-set bookkeeping they share.

use drchain_support::{AccountId, BlockNumber, Env, Moment, Origin, Overlay};

use crate::*;

/// The set implied by the members at block time `now`: members with the validator role that
/// are admitted then (unrevoked, certificate and CA within their validity), sorted. The same
/// rule admits peers to the network, so the set never holds a validator its peers refuse.
pub(crate) fn implied_validators(state: &Overlay<'_>, now: Moment) -> Vec<AccountId> {
    Members::iter(state)
        .into_iter()
        .filter(|(a, m)| m.role == MemberRole::Validator && is_admitted(state, a, now))
        .map(|(a, _)| a)
        .collect()
}

/// Schedules the validator set implied by the members at block time if it differs from the
/// latest one known.
pub(crate) fn reschedule_validators<E: From<Event>>(env: &mut Env<'_, '_, E>) -> Result<(), Error> {
    let next = implied_validators(env.state, env.block.timestamp);
    let effective_at = env.block.number + VALIDATOR_SET_DELAY;
    if next == validators_at(env.state, effective_at) {
        return Ok(());
    }
    if next.is_empty() {
        return Err(Error::NoValidatorsLeft);
    }
    PendingValidators::insert(env.state, &effective_at, &next);
    env.deposit(Event::ValidatorSetScheduled {
        effective_at,
        validators: next,
    });
    Ok(())
}

pub(crate) fn insert_member(
    state: &mut Overlay<'_>,
    v: &x509::VerifiedMember,
    role: MemberRole,
    at: BlockNumber,
) {
    let member = Member {
        account: v.account,
        role,
        certificate: v.certificate.der.clone(),
        subject: v.certificate.subject.clone(),
        anchor: v.anchor,
        not_before: v.certificate.not_before,
        not_after: v.certificate.not_after,
        admitted_at: at,
        revoked: None,
    };
    Members::insert(state, &v.account, &member);
}

/// Whether `account` may become a member: it is none now and was never revoked (revocation
/// is of the key, whatever certificate it comes back with).
fn check_new_member(state: &Overlay<'_>, account: &AccountId) -> Result<(), Error> {
    match Members::get(state, account) {
        None => Ok(()),
        Some(Member {
            revoked: Some(r), ..
        }) => Err(Error::MemberWasRevoked {
            account: *account,
            at: r.at,
        }),
        Some(_) => Err(Error::AlreadyMember { account: *account }),
    }
}

fn revoke_member(state: &mut Overlay<'_>, mut m: Member, reason: String, at: BlockNumber) {
    RevokedCertificates::insert(state, &drchain_support::blake3_hash(&m.certificate), &at);
    m.revoked = Some(Revocation { at, reason });
    Members::insert(state, &m.account.clone(), &m);
}

/// Executes a call. The runtime runs each call in a storage transaction and rolls it back on
/// error, so a call may write before it fails.
pub fn dispatch<E: From<Event>>(
    env: &mut Env<'_, '_, E>,
    origin: Origin,
    call: Call,
) -> Result<(), Error> {
    let now = env.block.timestamp;
    let number = env.block.number;
    match call {
        Call::Admit { certificate, role } => {
            origin.admin()?;
            let v = verify_certificate(env.state, &certificate, now)?;
            check_role(&v.certificate, role)?;
            check_new_member(env.state, &v.account)?;
            insert_member(env.state, &v, role, number);
            env.deposit(Event::MemberAdmitted {
                account: v.account,
                role,
                subject: v.certificate.subject.clone(),
            });
            reschedule_validators(env)
        }
        Call::Revoke { account, reason } => {
            origin.admin()?;
            let m = Members::get(env.state, &account)
                .filter(|m| m.revoked.is_none())
                .ok_or(Error::NotAMember { account })?;
            revoke_member(env.state, m, reason.clone(), number);
            env.deposit(Event::MemberRevoked { account, reason });
            reschedule_validators(env)
        }
        Call::RotateCertificate { certificate } => {
            let old = origin.signed()?;
            let m = Members::get(env.state, &old)
                .filter(|m| m.revoked.is_none())
                .ok_or(Error::NotAMember { account: old })?;
            let v = verify_certificate(env.state, &certificate, now)?;
            check_role(&v.certificate, m.role)?;
            if v.account != old {
                check_new_member(env.state, &v.account)?;
                revoke_member(
                    env.state,
                    m.clone(),
                    format!("rotated to {}", v.account),
                    number,
                );
            } else {
                // Renewal: the old certificate must not be usable again.
                let old_fingerprint = drchain_support::blake3_hash(&m.certificate);
                if old_fingerprint == v.certificate.fingerprint {
                    return Err(Error::SameCertificate);
                }
                RevokedCertificates::insert(env.state, &old_fingerprint, &number);
            }
            insert_member(env.state, &v, m.role, number);
            env.deposit(Event::CertificateRotated {
                old,
                new: v.account,
            });
            reschedule_validators(env)
        }
        Call::AddTrustAnchor { certificate } => {
            origin.admin()?;
            if certificate.len() > MAX_CERTIFICATE_BYTES {
                return Err(Error::CertificateTooLarge {
                    size: u32::try_from(certificate.len()).unwrap_or(u32::MAX),
                });
            }
            let ca = x509::check_trust_anchor(&certificate)?;
            if TrustAnchors::contains(env.state, &ca.fingerprint) {
                return Err(Error::TrustAnchorExists {
                    fingerprint: ca.fingerprint,
                });
            }
            TrustAnchors::insert(env.state, &ca.fingerprint, &TrustAnchor::from_parsed(&ca));
            env.deposit(Event::TrustAnchorAdded {
                fingerprint: ca.fingerprint,
                subject: ca.subject,
            });
            Ok(())
        }
        Call::RemoveTrustAnchor { fingerprint } => {
            origin.admin()?;
            if !TrustAnchors::contains(env.state, &fingerprint) {
                return Err(Error::UnknownTrustAnchor { fingerprint });
            }
            let in_use = Members::iter(env.state)
                .into_iter()
                .filter(|(_, m)| m.revoked.is_none() && m.anchor == fingerprint)
                .count();
            if in_use > 0 {
                return Err(Error::TrustAnchorInUse {
                    members: in_use as u32,
                });
            }
            TrustAnchors::remove(env.state, &fingerprint);
            env.deposit(Event::TrustAnchorRemoved { fingerprint });
            Ok(())
        }
        Call::SetAdmins { admins, threshold } => {
            origin.admin()?;
            let admins = check_admins(&admins, threshold)?;
            Admins::put(env.state, &admins);
            AdminThreshold::put(env.state, &threshold);
            env.deposit(Event::AdminsChanged { admins, threshold });
            Ok(())
        }
        Call::SetRole { account, role } => {
            origin.admin()?;
            let mut m = Members::get(env.state, &account)
                .filter(|m| m.revoked.is_none())
                .ok_or(Error::NotAMember { account })?;
            let cert = x509::parse(&m.certificate)?;
            check_role(&cert, role)?;
            m.role = role;
            Members::insert(env.state, &account, &m);
            env.deposit(Event::RoleChanged { account, role });
            reschedule_validators(env)
        }
    }
}
