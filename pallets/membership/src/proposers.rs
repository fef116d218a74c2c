//! Proposer turns. The proposer of round `r` at height `h` is the `r`-th validator of that
//! height's order: every validator by account, rotated by `h`, except that validators that
//! recently missed their turn go last. A validator misses its turn when its round did not
//! produce the block: the block's header names the round it was proposed in, so the proposers
//! of the rounds before it missed. A dead validator thus costs one failed round, not one per
//! turn, until [`SKIP_HEIGHTS`] have passed; then it gets a turn again.
//!
//! Every node computes the same order from finalized state: a miss recorded by block `m`
//! counts from height `m + MISS_DELAY`, so the order of `h` is the same in the state after
//! `h - 1` (where consensus and block execution read it) and after `h - 2` (where a node
//! checks messages for the height after the next).

use std::collections::BTreeSet;

use drchain_support::{storage_map, AccountId, BlockNumber, Overlay};

use crate::validators_at;

/// Heights from a block until the misses it records count (see the module).
pub const MISS_DELAY: BlockNumber = 2;
/// Heights a miss moves its validator to the end of the order for.
pub const SKIP_HEIGHTS: BlockNumber = 100;

storage_map!(
    /// Per validator, the heights of its latest two missed turns (oldest first): the newer may
    /// not count yet, and the older must then still be known.
    pub MissedTurns: AccountId => Vec<BlockNumber>, "Membership"
);

/// The proposer order at `height`: `validators` (sorted) rotated by `height`, those in
/// `skipped` moved to the end (unless that is all of them).
pub fn proposer_order(
    validators: &[AccountId],
    skipped: &BTreeSet<AccountId>,
    height: BlockNumber,
) -> Vec<AccountId> {
    let rotate = |set: Vec<AccountId>| {
        let mut set = set;
        if !set.is_empty() {
            let by = (height % set.len() as u64) as usize;
            set.rotate_left(by);
        }
        set
    };
    let (late, first): (Vec<AccountId>, Vec<AccountId>) =
        validators.iter().partition(|v| skipped.contains(v));
    if first.is_empty() {
        return rotate(late);
    }
    let mut order = rotate(first);
    order.extend(rotate(late));
    order
}

/// The validators that go last at `height`: a miss at `m` counts for
/// `m + MISS_DELAY ..= m + MISS_DELAY + SKIP_HEIGHTS - 1`.
pub fn skipped_proposers(state: &Overlay<'_>, height: BlockNumber) -> BTreeSet<AccountId> {
    MissedTurns::iter(state)
        .into_iter()
        .filter(|(_, misses)| {
            misses
                .iter()
                .filter(|m| **m + MISS_DELAY <= height)
                .max()
                .is_some_and(|m| height < m + MISS_DELAY + SKIP_HEIGHTS)
        })
        .map(|(who, _)| who)
        .collect()
}

/// The proposer order of `height`, read from the state after block `height - 1` (or
/// `height - 2`).
pub fn proposer_order_at(state: &Overlay<'_>, height: BlockNumber) -> Vec<AccountId> {
    proposer_order(
        &validators_at(state, height),
        &skipped_proposers(state, height),
        height,
    )
}

/// Block `height`, proposed in `round`, on the state after its parent: the proposers of the
/// rounds before `round` missed their turn.
pub fn record_missed_turns(state: &mut Overlay<'_>, height: BlockNumber, round: u32) {
    let order = proposer_order_at(state, height);
    for who in order.iter().take(round as usize) {
        let mut misses = MissedTurns::get(state, who).unwrap_or_default();
        misses.push(height);
        let keep = misses.len().saturating_sub(2);
        misses.drain(..keep);
        MissedTurns::insert(state, who, &misses);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn account(n: u8) -> AccountId {
        AccountId([n; 32])
    }

    #[test]
    fn without_misses_the_order_is_the_plain_rotation() {
        let validators: Vec<AccountId> = (1..=4).map(account).collect();
        for height in 0..8 {
            let order = proposer_order(&validators, &BTreeSet::new(), height);
            for round in 0..4 {
                assert_eq!(
                    order[round],
                    validators[(height as usize + round) % 4],
                    "h{height} r{round}"
                );
            }
        }
    }

    #[test]
    fn skipped_validators_go_last_unless_all_are_skipped() {
        let validators: Vec<AccountId> = (1..=4).map(account).collect();
        let skipped: BTreeSet<AccountId> = [account(2)].into();
        for height in 0..8 {
            let order = proposer_order(&validators, &skipped, height);
            assert_eq!(order.len(), 4);
            assert_eq!(order[3], account(2), "h{height}: {order:?}");
        }
        let all: BTreeSet<AccountId> = validators.iter().copied().collect();
        assert_eq!(
            proposer_order(&validators, &all, 5),
            proposer_order(&validators, &BTreeSet::new(), 5)
        );
    }
}
