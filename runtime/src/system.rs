//! System storage the runtime itself keeps: height, time, the live clock, nonces.

use drchain_support::{
    storage_map, storage_value, AccountId, BlockNumber, Moment, Nonce, Overlay, H256,
};

storage_value!(
    /// Height of the latest executed block.
    pub Number: BlockNumber, "System"
);
storage_value!(
    /// Hash of the parent of the latest executed block.
    pub ParentHash: H256, "System"
);
storage_value!(
    /// Timestamp of the latest executed block.
    pub Timestamp: Moment, "System"
);
storage_value!(
    /// The live clock at the latest executed block.
    pub LiveClock: Moment, "System"
);
storage_value!(
    /// The chain's id from its spec (part of the genesis state, hence of the genesis hash).
    pub ChainId: String, "System"
);
storage_map!(
    /// Next nonce per account.
    pub Nonces: AccountId => Nonce, "System"
);

/// The next nonce `who` must use.
pub fn nonce(state: &Overlay<'_>, who: &AccountId) -> Nonce {
    Nonces::get(state, who).unwrap_or(0)
}

/// The live clock after a block with `timestamp` whose parent had `parent_timestamp` and live
/// clock `parent_live`: it advances by the elapsed time, but by at most `max_gap`, so a stalled
/// chain does not age heartbeats when it resumes.
pub fn advance_live_clock(
    parent_live: Moment,
    parent_timestamp: Moment,
    timestamp: Moment,
    max_gap: Moment,
) -> Moment {
    parent_live + timestamp.saturating_sub(parent_timestamp).min(max_gap)
}

#[cfg(test)]
mod tests {
    use super::advance_live_clock;

    #[test]
    fn live_clock_follows_time_but_skips_stalls() {
        assert_eq!(advance_live_clock(1000, 50_000, 50_200, 400), 1200);
        assert_eq!(advance_live_clock(1000, 50_000, 60_000, 400), 1400);
        assert_eq!(advance_live_clock(1000, 50_000, 50_000, 400), 1000);
    }
}
