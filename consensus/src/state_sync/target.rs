//! What a joining node syncs to, and how it comes to trust it without replaying the chain:
//! from the genesis validator set, through each validator-set change, to a certified block.
//!
//! Trust follows certificates. A block certified by 2/3+ of a set that never had 1/3 or more
//! faulty members is on the chain, since honest validators sign only blocks of the chain. The
//! set that signs block `h` is the set in force in the state after `h`, so a change at `h`
//! is proven by block `h - 1` (certified by the set before), the header of `h` (linked by its
//! parent hash) and a read proof of the new set against that header's state root. A peer that
//! leaves a change out can only make us check a later certificate against an older set, which
//! is still sound under that assumption (the usual one of light clients: a set stays honest
//! after it is replaced), and fails when the older set no longer signs.

use std::collections::BTreeSet;

use drchain_runtime::{check_body, pallet_membership, Block, Header};
use drchain_support::trie_proof::{verify_read_proof, ReadProof};
use drchain_support::{AccountId, H256};
use malachitebft_core_types::{NilOrVal, VoteType};
use parity_scale_codec::{Decode, Encode};

use crate::codec::{round_from_wire, WireCertificate};
use crate::context::{Address, Height, Vote};

/// Most validator-set changes a target may carry (a set changes when an admin adds or
/// removes a validator, or a certificate expires: rarely).
pub const MAX_SET_CHANGES: usize = 4096;

/// The proof that the validator set changed at `header.number`.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SetChange {
    /// Block `header.number - 1`'s header.
    pub parent: Header,
    /// Its certificate, by the set before the change (none when the parent is genesis).
    pub parent_certificate: Option<WireCertificate>,
    /// The header of the block the new set took effect in.
    pub header: Header,
    /// The new set, as stored in the state after `header`.
    pub validators: Vec<AccountId>,
    /// The read proof of that value against `header.state_root`.
    pub proof: ReadProof,
}

/// A finalized block a peer offers to sync the state of, with what makes it trusted.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct SyncTarget {
    pub block: Block,
    pub certificate: WireCertificate,
    /// Every validator-set change after genesis up to `block`, oldest first.
    pub set_changes: Vec<SetChange>,
}

/// Why a sync target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{count} validator-set changes, more than {MAX_SET_CHANGES}")]
    TooManyChanges { count: usize },
    #[error("the validator-set change at #{number} is out of order")]
    ChangeOutOfOrder { number: u64 },
    #[error("the validator-set change at #{number} does not link to its parent")]
    ChangeUnlinked { number: u64 },
    #[error("the validator-set change at #{number} has a bad proof of the new set")]
    ChangeBadProof { number: u64 },
    #[error("the certificate of #{number} is bad: {reason}")]
    BadCertificate { number: u64, reason: String },
    #[error("block #{number}'s body does not match its header: {reason}")]
    BadBody { number: u64, reason: String },
}

/// The chain a node starts from: what it trusts before any peer speaks.
#[derive(Debug, Clone)]
pub struct TrustRoot {
    /// The genesis hash (covered by every signature).
    pub genesis_hash: H256,
    /// The genesis header.
    pub genesis: Header,
    /// The validator set in force at genesis.
    pub validators: Vec<AccountId>,
}

/// Checks `target` from `root`: every set change in turn, then the block's certificate by
/// the last set and its body against its header.
pub fn verify_target(root: &TrustRoot, target: &SyncTarget) -> Result<(), TargetError> {
    let number = target.block.header.number;
    let validators = follow_set_changes(root, &target.set_changes, number)?;
    verify_certificate(root, &target.block.header, &target.certificate, &validators)?;
    check_body(&target.block).map_err(|e| TargetError::BadBody {
        number,
        reason: e.to_string(),
    })
}

/// The validator set `set_changes` lead to from `root`, each change checked (none may lie
/// above `up_to`): the set that signs blocks after the last change, up to the next one.
pub fn follow_set_changes(
    root: &TrustRoot,
    set_changes: &[SetChange],
    up_to: u64,
) -> Result<Vec<AccountId>, TargetError> {
    if set_changes.len() > MAX_SET_CHANGES {
        return Err(TargetError::TooManyChanges {
            count: set_changes.len(),
        });
    }
    let number = up_to;
    let mut validators = root.validators.clone();
    let mut last = 0;
    for change in set_changes {
        let at = change.header.number;
        if at <= last || at > number {
            return Err(TargetError::ChangeOutOfOrder { number: at });
        }
        if change.parent.number + 1 != at || change.header.parent_hash != change.parent.hash() {
            return Err(TargetError::ChangeUnlinked { number: at });
        }
        match &change.parent_certificate {
            None if change.parent.hash() == root.genesis.hash() => {}
            None => return Err(TargetError::ChangeUnlinked { number: at }),
            Some(c) => verify_certificate(root, &change.parent, c, &validators)?,
        }
        let key = pallet_membership::Validators::key();
        if change.validators.is_empty()
            || !verify_read_proof(
                &change.header.state_root,
                &key,
                &change.validators.encode(),
                &change.proof,
            )
        {
            return Err(TargetError::ChangeBadProof { number: at });
        }
        validators = change.validators.clone();
        last = at;
    }
    Ok(validators)
}

/// Checks that `certificate` holds precommits for `header` by more than two thirds of
/// `validators`, each signature valid and no validator counted twice.
pub fn verify_certificate(
    root: &TrustRoot,
    header: &Header,
    certificate: &WireCertificate,
    validators: &[AccountId],
) -> Result<(), TargetError> {
    let number = header.number;
    let bad = |reason: &str| TargetError::BadCertificate {
        number,
        reason: reason.to_owned(),
    };
    if certificate.height != number || certificate.block_hash != header.hash() {
        return Err(bad("it is for another block"));
    }
    let round =
        round_from_wire(certificate.round, "certificate").map_err(|e| bad(&e.to_string()))?;
    let set: BTreeSet<&AccountId> = validators.iter().collect();
    let mut signed = BTreeSet::new();
    for (account, signature) in &certificate.signatures {
        if !set.contains(account) {
            return Err(bad("a signer is not a validator"));
        }
        if !signed.insert(*account) {
            return Err(bad("a validator signs twice"));
        }
        let vote = Vote {
            vote_type: VoteType::Precommit,
            height: Height(number),
            round,
            value: NilOrVal::Val(certificate.block_hash),
            validator: Address(*account),
        };
        if !account.verify(&vote.sign_bytes(&root.genesis_hash), signature) {
            return Err(bad("a signature does not verify"));
        }
    }
    if signed.len() * 3 <= set.len() * 2 {
        return Err(bad("fewer than two thirds of the validators signed"));
    }
    Ok(())
}
