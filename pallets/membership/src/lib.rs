//! # Membership pallet
//!
//! Who belongs to the chain, and with which powers:
//! - **trust anchors**: the CA certificates pinned at genesis (or added by the admins);
//! - **members**: accounts admitted by an X.509 certificate issued by a pinned CA whose subject
//!   key is the member's Ed25519 key, with a role (`validator` or `member`);
//! - **validators**: the consensus set; changes take effect [`VALIDATOR_SET_DELAY`] blocks after
//!   the block that made them, so every node knows the set of height `h + 1` while deciding `h`;
//! - **admins**: accounts that, `threshold` of them together, admit, revoke and reconfigure
//!   (the runtime collects their approvals through [`propose`] and [`approve`]).
//!
//! Trust is out-of-band: a member is admitted only through an on-chain call checked against
//! the pinned CAs, never because of what a peer presents on the wire.

#![forbid(unsafe_code)]

#[cfg(any(test, feature = "certgen"))]
pub mod certgen;
#[cfg(test)]
mod tests;
pub mod x509;

mod admins;
mod admission;
mod dispatch;
pub mod proposers;

use admins::check_admins;
pub use admins::{admin_threshold, approve, cancel, is_admin, propose, Approval};
use admission::check_role;
pub use admission::{
    admitted_until, is_admitted, is_admitted_peer, may_transact, member, trust_anchors,
    verify_certificate,
};
pub use dispatch::dispatch;
use dispatch::{implied_validators, insert_member, reschedule_validators};
pub use proposers::{proposer_order, proposer_order_at, record_missed_turns, skipped_proposers};

use drchain_support::{
    storage_map, storage_value, AccountId, BlockNumber, Env, Hooks, Moment, Overlay, H256,
};
use parity_scale_codec::{Decode, Encode};
use serde::{Deserialize, Serialize};

pub use x509::CertError;

/// Storage prefix of this pallet.
pub const PALLET: &str = "Membership";
/// A validator-set change made in block `n` takes effect at height `n + VALIDATOR_SET_DELAY`.
pub const VALIDATOR_SET_DELAY: BlockNumber = 2;
/// Largest certificate accepted, in bytes.
pub const MAX_CERTIFICATE_BYTES: usize = 16 * 1024;
/// Most admins.
pub const MAX_ADMINS: usize = 64;

/// What a member may do.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Encode, Decode, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum MemberRole {
    /// Runs services and submits transactions; does not vote.
    #[codec(index = 0)]
    Member,
    /// Also signs consensus votes.
    #[codec(index = 1)]
    Validator,
}

/// Why and when a member was revoked.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
pub struct Revocation {
    /// Block of the revocation.
    pub at: BlockNumber,
    /// Free text from the admins (or "rotated to 0x…").
    pub reason: String,
}

/// An admitted (or revoked) member.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct Member {
    /// The member's Ed25519 key.
    pub account: AccountId,
    pub role: MemberRole,
    /// The certificate (DER).
    #[serde(with = "drchain_support::primitives::hex_bytes")]
    pub certificate: Vec<u8>,
    /// Certificate subject.
    pub subject: String,
    /// Fingerprint of the pinned CA that issued it.
    pub anchor: H256,
    /// Certificate validity, ms.
    pub not_before: Moment,
    /// Certificate validity, ms.
    pub not_after: Moment,
    /// Block of admission.
    pub admitted_at: BlockNumber,
    /// Set once revoked.
    pub revoked: Option<Revocation>,
}

/// A pinned CA certificate.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct TrustAnchor {
    /// The certificate (DER).
    #[serde(with = "drchain_support::primitives::hex_bytes")]
    pub certificate: Vec<u8>,
    pub subject: String,
    /// Its validity, ms: certificates it issued are valid only within it too.
    pub not_before: Moment,
    /// Its validity, ms.
    pub not_after: Moment,
}

impl TrustAnchor {
    fn from_parsed(ca: &x509::ParsedCertificate) -> Self {
        Self {
            certificate: ca.der.clone(),
            subject: ca.subject.clone(),
            not_before: ca.not_before,
            not_after: ca.not_after,
        }
    }
}

/// A call waiting for more admin approvals.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
pub struct AdminProposal {
    /// The SCALE-encoded runtime call.
    #[serde(with = "drchain_support::primitives::hex_bytes")]
    pub call: Vec<u8>,
    /// Who proposed it.
    pub proposer: AccountId,
    /// Admins that approved it so far (the proposer included).
    pub approvals: Vec<AccountId>,
    /// Block of the proposal.
    pub proposed_at: BlockNumber,
}

storage_map!(
    /// Pinned CAs by the blake3 fingerprint of their DER.
    pub TrustAnchors: H256 => TrustAnchor, "Membership"
);
storage_map!(
    /// Members by account, revoked ones included.
    pub Members: AccountId => Member, "Membership"
);
storage_map!(
    /// Fingerprints of revoked certificates, with the block of revocation.
    pub RevokedCertificates: H256 => BlockNumber, "Membership"
);
storage_value!(
    /// The validator set in force, sorted.
    pub Validators: Vec<AccountId>, "Membership"
);
storage_map!(
    /// Scheduled validator sets by the height they take effect at.
    pub PendingValidators: BlockNumber => Vec<AccountId>, "Membership"
);
storage_value!(
    /// Admin accounts, sorted.
    pub Admins: Vec<AccountId>, "Membership"
);
storage_value!(
    /// Approvals an admin call needs.
    pub AdminThreshold: u32, "Membership"
);
storage_map!(
    /// Admin calls waiting for approvals, by blake3 of the encoded call.
    pub AdminProposals: H256 => AdminProposal, "Membership"
);

/// Calls of this pallet. Indices are fixed: they are the wire format.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Call {
    /// Admin: admit the holder of `certificate` (DER) with `role`. The certificate must pass
    /// every check of [`x509::verify_member`] at block time, and its OU (if any) must grant
    /// the role.
    #[codec(index = 0)]
    Admit {
        /// DER certificate.
        #[serde(with = "drchain_support::primitives::hex_bytes")]
        certificate: Vec<u8>,
        /// Role to grant.
        role: MemberRole,
    },
    /// Admin: revoke a member; its key can never be admitted again, with any certificate.
    #[codec(index = 1)]
    Revoke {
        /// The member.
        account: AccountId,
        /// Why, for the audit trail.
        reason: String,
    },
    /// Signed by a member: replace its certificate. A certificate with the same key renews it;
    /// one with a new key moves the membership (and role) to the new key and revokes the old.
    /// The new key must never have been a member: a revoked key does not come back this way.
    #[codec(index = 2)]
    RotateCertificate {
        /// The new DER certificate.
        #[serde(with = "drchain_support::primitives::hex_bytes")]
        certificate: Vec<u8>,
    },
    /// Admin: pin another CA certificate.
    #[codec(index = 3)]
    AddTrustAnchor {
        /// DER CA certificate.
        #[serde(with = "drchain_support::primitives::hex_bytes")]
        certificate: Vec<u8>,
    },
    /// Admin: unpin a CA. Refused while members it issued remain admitted.
    #[codec(index = 4)]
    RemoveTrustAnchor {
        /// The CA's fingerprint.
        fingerprint: H256,
    },
    /// Admin: replace the admin set and threshold.
    #[codec(index = 5)]
    SetAdmins {
        admins: Vec<AccountId>,
        /// Approvals needed, 1 to the number of admins.
        threshold: u32,
    },
    /// Admin: change a member's role (the certificate's OU must grant it).
    #[codec(index = 6)]
    SetRole {
        /// The member.
        account: AccountId,
        role: MemberRole,
    },
}

/// Events of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A member was admitted.
    #[codec(index = 0)]
    MemberAdmitted {
        /// The member.
        account: AccountId,
        role: MemberRole,
        /// Certificate subject.
        subject: String,
    },
    /// A member was revoked.
    #[codec(index = 1)]
    MemberRevoked {
        /// The member.
        account: AccountId,
        reason: String,
    },
    /// A member replaced its certificate.
    #[codec(index = 2)]
    CertificateRotated {
        /// Old account.
        old: AccountId,
        /// New account (equal to `old` for a renewal).
        new: AccountId,
    },
    /// A member's role changed.
    #[codec(index = 3)]
    RoleChanged {
        /// The member.
        account: AccountId,
        role: MemberRole,
    },
    /// A CA was pinned.
    #[codec(index = 4)]
    TrustAnchorAdded { fingerprint: H256, subject: String },
    /// A CA was unpinned.
    #[codec(index = 5)]
    TrustAnchorRemoved { fingerprint: H256 },
    /// The admin set changed.
    #[codec(index = 6)]
    AdminsChanged {
        admins: Vec<AccountId>,
        threshold: u32,
    },
    /// A new validator set was scheduled.
    #[codec(index = 7)]
    ValidatorSetScheduled {
        /// Height at which it takes effect.
        effective_at: BlockNumber,
        /// The set.
        validators: Vec<AccountId>,
    },
    /// A scheduled validator set took effect at this block.
    #[codec(index = 8)]
    ValidatorSetChanged {
        /// The set now in force.
        validators: Vec<AccountId>,
    },
}

impl Event {
    /// The line an operator reads in the node's log for this membership change
    /// (`membership: admitted 0x… as validator (CN=…)`, `revoked`, `validator set now …`).
    pub fn operator_line(&self) -> String {
        let accounts = |set: &[AccountId]| {
            set.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(",")
        };
        match self {
            Event::MemberAdmitted {
                account,
                role,
                subject,
            } => format!("membership: admitted {account} as {role:?} ({subject})"),
            Event::MemberRevoked { account, reason } => {
                format!("membership: revoked {account} ({reason})")
            }
            Event::CertificateRotated { old, new } => {
                format!("membership: certificate rotated from {old} to {new}")
            }
            Event::RoleChanged { account, role } => {
                format!("membership: {account} is now {role:?}")
            }
            Event::TrustAnchorAdded {
                fingerprint,
                subject,
            } => format!("membership: CA pinned {fingerprint} ({subject})"),
            Event::TrustAnchorRemoved { fingerprint } => {
                format!("membership: CA unpinned {fingerprint}")
            }
            Event::AdminsChanged { admins, threshold } => format!(
                "membership: admins now {} (threshold {threshold})",
                accounts(admins)
            ),
            Event::ValidatorSetScheduled {
                effective_at,
                validators,
            } => format!(
                "membership: validator set {} scheduled for #{effective_at}",
                accounts(validators)
            ),
            Event::ValidatorSetChanged { validators } => {
                format!("membership: validator set now {}", accounts(validators))
            }
        }
    }
}

/// Errors of this pallet.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode, thiserror::Error)]
pub enum Error {
    /// Wrong origin for the call.
    #[error(transparent)]
    BadOrigin(#[from] drchain_support::dispatch::BadOrigin),
    /// The certificate failed a check.
    #[error("certificate refused: {0}")]
    Certificate(CertError),
    /// Larger than [`MAX_CERTIFICATE_BYTES`].
    #[error("certificate of {size} bytes is larger than {MAX_CERTIFICATE_BYTES}")]
    CertificateTooLarge { size: u32 },
    /// The account is already an admitted member.
    #[error("{account} is already a member")]
    AlreadyMember { account: AccountId },
    /// The account was revoked: a revoked key is never admitted again, whatever certificate
    /// it comes with (issue a certificate for a new key).
    #[error("{account} was revoked at block {at}; a revoked key is never admitted again: issue a certificate for a new key")]
    MemberWasRevoked { account: AccountId, at: BlockNumber },
    /// No such member, or it was revoked.
    #[error("{account} is not an admitted member")]
    NotAMember { account: AccountId },
    /// A rotation to the certificate the member already holds.
    #[error("the member already holds this certificate")]
    SameCertificate,
    /// The certificate's OU does not grant the requested role.
    #[error("the certificate grants {granted:?}, not {requested:?}")]
    RoleNotGranted {
        /// What the OU says.
        granted: MemberRole,
        /// What was asked.
        requested: MemberRole,
    },
    /// The change would leave no validator.
    #[error("the change would leave the chain without validators")]
    NoValidatorsLeft,
    /// No such trust anchor.
    #[error("no pinned CA with fingerprint {fingerprint}")]
    UnknownTrustAnchor { fingerprint: H256 },
    /// The CA is already pinned.
    #[error("CA {fingerprint} is already pinned")]
    TrustAnchorExists { fingerprint: H256 },
    /// Members issued by this CA remain.
    #[error("{members} admitted members were issued by this CA; revoke or rotate them first")]
    TrustAnchorInUse {
        /// How many.
        members: u32,
    },
    /// Bad admin set or threshold.
    #[error("invalid admin set: {reason}")]
    InvalidAdmins { reason: String },
    /// The signer is not an admin.
    #[error("{account} is not an admin")]
    NotAnAdmin { account: AccountId },
    /// The same call is already proposed.
    #[error("proposal {proposal} already exists")]
    ProposalExists {
        /// Its hash.
        proposal: H256,
    },
    /// No such proposal.
    #[error("no proposal {proposal}")]
    UnknownProposal {
        /// Its hash.
        proposal: H256,
    },
    /// This admin already approved.
    #[error("{account} already approved this proposal")]
    AlreadyApproved {
        /// The admin.
        account: AccountId,
    },
}

impl From<CertError> for Error {
    fn from(e: CertError) -> Self {
        Error::Certificate(e)
    }
}

/// The validator set in force.
pub fn validators(state: &Overlay<'_>) -> Vec<AccountId> {
    Validators::get(state).unwrap_or_default()
}

/// The validator set for `height`, given the state after block `height - 1` or earlier:
/// the latest set scheduled at or below `height`, else the set in force.
pub fn validators_at(state: &Overlay<'_>, height: BlockNumber) -> Vec<AccountId> {
    PendingValidators::iter(state)
        .into_iter()
        .filter(|(at, _)| *at <= height)
        .max_by_key(|(at, _)| *at)
        .map(|(_, set)| set)
        .unwrap_or_else(|| validators(state))
}

/// The pallet, for its block hooks.
#[derive(Debug)]
pub struct Pallet;

impl<E: From<Event>> Hooks<E> for Pallet {
    /// Puts a scheduled validator set into force at its height; then schedules the removal
    /// of validators whose certificate (or CA) expired by this block's time, unless none
    /// would be left: then the set stays, so that the chain can still finalize a renewal.
    fn on_initialize(env: &mut Env<'_, '_, E>) {
        let number = env.block.number;
        if let Some(set) = PendingValidators::get(env.state, &number) {
            PendingValidators::remove(env.state, &number);
            Validators::put(env.state, &set);
            env.deposit(Event::ValidatorSetChanged { validators: set });
        }
        // Only an empty set can be refused, and keeping the old one is the answer to that.
        let _ = reschedule_validators(env);
    }
}

/// Genesis configuration of this pallet (DER certificates).
#[derive(Debug, Clone, Default)]
pub struct GenesisConfig {
    /// Pinned CA certificates.
    pub trust_anchors: Vec<Vec<u8>>,
    /// Admin accounts.
    pub admins: Vec<AccountId>,
    /// Admin approvals needed.
    pub admin_threshold: u32,
    /// Initial members: certificate and role.
    pub members: Vec<(Vec<u8>, MemberRole)>,
}

/// Which genesis entry is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {error}")]
pub struct GenesisError {
    /// The entry, e.g. `members[2].certificate`.
    pub field: String,
    /// What is wrong with it.
    pub error: Error,
}

/// Writes the genesis state of this pallet; certificates are checked at `genesis_time`.
pub fn build_genesis(
    state: &mut Overlay<'_>,
    config: &GenesisConfig,
    genesis_time: Moment,
) -> Result<(), GenesisError> {
    let err = |field: String| move |error: Error| GenesisError { field, error };
    for (i, der) in config.trust_anchors.iter().enumerate() {
        let ca = x509::check_trust_anchor(der)
            .map_err(Error::from)
            .map_err(err(format!("trust_anchors[{i}]")))?;
        TrustAnchors::insert(state, &ca.fingerprint, &TrustAnchor::from_parsed(&ca));
    }
    let admins =
        check_admins(&config.admins, config.admin_threshold).map_err(err("admins".into()))?;
    Admins::put(state, &admins);
    AdminThreshold::put(state, &config.admin_threshold);
    for (i, (der, role)) in config.members.iter().enumerate() {
        let field = format!("members[{i}].certificate");
        let v = verify_certificate(state, der, genesis_time).map_err(err(field.clone()))?;
        check_role(&v.certificate, *role).map_err(err(field.clone()))?;
        if Members::contains(state, &v.account) {
            return Err(GenesisError {
                field,
                error: Error::AlreadyMember { account: v.account },
            });
        }
        insert_member(state, &v, *role, 0);
    }
    let set = implied_validators(state, genesis_time);
    if set.is_empty() {
        return Err(GenesisError {
            field: "members".into(),
            error: Error::NoValidatorsLeft,
        });
    }
    Validators::put(state, &set);
    Ok(())
}

/// The CN of a certificate subject as the views print it (`CN=alice,OU=…` gives `alice`), or
/// the whole subject when it has none: how operators' tools name a member.
pub fn common_name(subject: &str) -> &str {
    subject
        .split(',')
        .find_map(|part| part.trim().strip_prefix("CN="))
        .unwrap_or(subject)
}
