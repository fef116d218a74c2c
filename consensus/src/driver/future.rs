//! Messages for heights after the one being decided, kept until this node gets there. Only
//! messages a validator of their height signed are kept (the driver verifies them first), one
//! per vote or proposal slot, within a byte budget in all and per validator: what a member
//! floods cannot crowd out the honest validators' messages or fill memory.

use std::collections::BTreeMap;

use drchain_support::AccountId;

use crate::codec::ConsensusMessage;

/// Where a buffered message belongs: (height, kind, round, signer); kind 0 is a proposal,
/// 1 + the vote type code a vote, so a height's proposals replay before its votes.
pub(super) type FutureSlot = (u64, u8, i64, AccountId);

/// What became of a message offered to the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Buffered {
    Added,
    /// Its slot already holds a message.
    Duplicate,
    /// No room in the budget (in all, or of its signer).
    Full,
}

/// The buffer's byte budgets.
#[derive(Debug, Clone, Copy)]
pub(super) struct FutureLimits {
    pub(super) total_bytes: usize,
    pub(super) per_validator_bytes: usize,
}

#[derive(Debug, Default)]
pub(super) struct FutureBuffer {
    entries: BTreeMap<FutureSlot, (usize, ConsensusMessage)>,
    bytes: usize,
    by_signer: BTreeMap<AccountId, usize>,
}

impl FutureBuffer {
    /// Keeps `message` (`size` bytes, already verified) in `slot` if there is room.
    pub(super) fn insert(
        &mut self,
        slot: FutureSlot,
        size: usize,
        message: ConsensusMessage,
        limits: FutureLimits,
    ) -> Buffered {
        if self.entries.contains_key(&slot) {
            return Buffered::Duplicate;
        }
        let signer = self.by_signer.get(&slot.3).copied().unwrap_or(0);
        if self.bytes + size > limits.total_bytes || signer + size > limits.per_validator_bytes {
            return Buffered::Full;
        }
        self.bytes += size;
        *self.by_signer.entry(slot.3).or_default() += size;
        self.entries.insert(slot, (size, message));
        Buffered::Added
    }

    /// Whether anything waits for `height`.
    pub(super) fn has(&self, height: u64) -> bool {
        self.entries
            .range(Self::from(height)..Self::from(height + 1))
            .next()
            .is_some()
    }

    /// Takes out what waits for `height` (proposals first), and forgets earlier heights.
    pub(super) fn take(&mut self, height: u64) -> Vec<ConsensusMessage> {
        self.prune_below(height);
        let later = self.entries.split_off(&Self::from(height + 1));
        let now = std::mem::replace(&mut self.entries, later);
        now.into_iter()
            .map(|(slot, (size, message))| {
                self.forget(&slot, size);
                message
            })
            .collect()
    }

    /// Drops what waits for heights below `height`.
    pub(super) fn prune_below(&mut self, height: u64) {
        let kept = self.entries.split_off(&Self::from(height));
        let stale = std::mem::replace(&mut self.entries, kept);
        for (slot, (size, _)) in stale {
            self.forget(&slot, size);
        }
    }

    /// Bytes held.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    fn forget(&mut self, slot: &FutureSlot, size: usize) {
        self.bytes -= size;
        if let Some(b) = self.by_signer.get_mut(&slot.3) {
            *b -= size;
            if *b == 0 {
                self.by_signer.remove(&slot.3);
            }
        }
    }

    /// The first slot of `height`.
    fn from(height: u64) -> FutureSlot {
        (height, 0, i64::MIN, AccountId([0; 32]))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use drchain_support::{AccountId, Signature};

    use super::*;
    use crate::codec::WireVote;

    fn vote(height: u64, round: i64, who: u8) -> (FutureSlot, ConsensusMessage) {
        let validator = AccountId([who; 32]);
        let message = ConsensusMessage::Vote(WireVote {
            vote_type: 0,
            height,
            round,
            value: None,
            validator,
            signature: Signature([0; 64]),
        });
        ((height, 1, round, validator), message)
    }

    #[test]
    fn one_validator_spends_only_its_own_budget_and_taking_frees_it() {
        let limits = FutureLimits {
            total_bytes: 1_000,
            per_validator_bytes: 300,
        };
        let mut buffer = FutureBuffer::default();
        let mut added = 0;
        for round in 0..10 {
            let (slot, m) = vote(2, round, 1);
            if buffer.insert(slot, 100, m, limits) == Buffered::Added {
                added += 1;
            }
        }
        assert_eq!(added, 3, "validator 1 is held to its 300 bytes");
        let (slot, m) = vote(2, 0, 2);
        assert_eq!(buffer.insert(slot, 100, m.clone(), limits), Buffered::Added);
        assert_eq!(buffer.insert(slot, 100, m, limits), Buffered::Duplicate);
        let (slot, m) = vote(3, 0, 3);
        assert_eq!(buffer.insert(slot, 100, m, limits), Buffered::Added);
        assert_eq!(buffer.bytes(), 500);
        assert!(buffer.has(2) && buffer.has(3) && !buffer.has(4));
        assert_eq!(buffer.take(2).len(), 4);
        assert_eq!(buffer.bytes(), 100);
        buffer.prune_below(4);
        assert_eq!(buffer.bytes(), 0);
        assert!(!buffer.has(3));
    }
}
