//! Certificate checks: who is admitted, by which pinned CA, with which role, at a block's
//! time.

use drchain_support::{AccountId, BlockNumber, Moment, Overlay};

use crate::*;

/// The pinned CAs, parsed.
pub fn trust_anchors(state: &Overlay<'_>) -> Vec<x509::ParsedCertificate> {
    TrustAnchors::iter(state)
        .into_iter()
        .filter_map(|(_, a)| x509::parse(&a.certificate).ok())
        .collect()
}

/// Verifies a member certificate against the pinned CAs and revocations at block time `now`.
pub fn verify_certificate(
    state: &Overlay<'_>,
    der: &[u8],
    now: Moment,
) -> Result<x509::VerifiedMember, Error> {
    if der.len() > MAX_CERTIFICATE_BYTES {
        return Err(Error::CertificateTooLarge {
            size: u32::try_from(der.len()).unwrap_or(u32::MAX),
        });
    }
    let anchors = trust_anchors(state);
    Ok(x509::verify_member(der, &anchors, now, |fp| {
        RevokedCertificates::contains(state, fp)
    })?)
}

/// The member record of `account`, revoked or not.
pub fn member(state: &Overlay<'_>, account: &AccountId) -> Option<Member> {
    Members::get(state, account)
}

/// Whether `account` is admitted at block time `now`: a member, not revoked, its certificate
/// and its CA's within their validity windows, and its CA still pinned.
pub fn is_admitted(state: &Overlay<'_>, account: &AccountId, now: Moment) -> bool {
    let within = |from: Moment, to: Moment| from <= now && now <= to;
    Members::get(state, account).is_some_and(|m| {
        m.revoked.is_none()
            && within(m.not_before, m.not_after)
            && TrustAnchors::get(state, &m.anchor)
                .is_some_and(|ca| within(ca.not_before, ca.not_after))
    })
}

/// When `m` stops being admitted by time: the earlier end of its certificate's and its CA's
/// validity (0 if its CA is no longer pinned).
pub fn admitted_until(state: &Overlay<'_>, m: &Member) -> Moment {
    let ca = TrustAnchors::get(state, &m.anchor).map_or(0, |ca| ca.not_after);
    m.not_after.min(ca)
}

/// Whether the network admits `account` as a peer after a block of time `now` and number
/// `head`: an admitted member, or a validator of the next two heights. A validator whose
/// certificate just expired still votes until it leaves the set (two blocks later, see
/// [`crate::Pallet`]'s hook): refusing it meanwhile could take the quorum needed to remove it.
pub fn is_admitted_peer(
    state: &Overlay<'_>,
    account: &AccountId,
    now: Moment,
    head: BlockNumber,
) -> bool {
    is_admitted(state, account, now)
        || (head + 1..=head + VALIDATOR_SET_DELAY)
            .any(|height| validators_at(state, height).contains(account))
}

/// Whether `account` may sign transactions: an unrevoked member (even with an expired
/// certificate, so that it can rotate it) or an admin.
pub fn may_transact(state: &Overlay<'_>, account: &AccountId) -> bool {
    is_admin(state, account) || Members::get(state, account).is_some_and(|m| m.revoked.is_none())
}

pub(crate) fn check_role(
    cert: &x509::ParsedCertificate,
    requested: MemberRole,
) -> Result<(), Error> {
    match cert.granted_role {
        Some(granted) if granted < requested => Err(Error::RoleNotGranted { granted, requested }),
        _ => Ok(()),
    }
}
