//! The informant, as Substrate's: at info level one line every few seconds — the finalized
//! head, peers, blocks and transactions per second since the previous line, and whether the
//! node is syncing — instead of lines for every block (those are at debug, target
//! `drchain_node::node_loop::effects`). A chain that finalized nothing in that time is worth a
//! warning: even an idle chain makes several empty blocks a second.

use std::time::Duration;

use drchain_rpc::ChainStatus;
use tokio::sync::watch;

/// How often the informant speaks.
pub const EVERY: Duration = Duration::from_secs(5);

/// What to say about the interval from `before` to `now`, `elapsed` long: `Err` with the
/// warning when nothing was finalized.
pub fn line(before: &ChainStatus, now: &ChainStatus, elapsed: Duration) -> Result<String, String> {
    let secs = elapsed.as_secs_f64().max(0.001);
    let blocks = now.finalized.saturating_sub(before.finalized);
    let txs = now
        .included_transactions
        .saturating_sub(before.included_transactions);
    let hash = now.hash.to_string();
    // As Substrate prints it: enough to match against a full hash by eye.
    let short = match (hash.get(..6), hash.get(hash.len().saturating_sub(4)..)) {
        (Some(start), Some(end)) if hash.len() > 12 => format!("{start}…{end}"),
        _ => hash,
    };
    let head = format!("#{} ({short})", now.finalized);
    let peers = match now.peers {
        1 => "1 peer".to_owned(),
        n => format!("{n} peers"),
    };
    if blocks == 0 {
        return Err(format!(
            "no block finalized in {secs:.0} s: {head}, {peers}"
        ));
    }
    let doing = if now.syncing { "syncing" } else { "finalized" };
    Ok(format!(
        "{doing} {head}, {peers}, {:.1} blocks/s, {:.1} tx/s",
        blocks as f64 / secs,
        txs as f64 / secs
    ))
}

/// Speaks every [`EVERY`] until the node's status channel closes.
pub async fn run(mut status: watch::Receiver<ChainStatus>) {
    let mut tick = tokio::time::interval(EVERY);
    tick.tick().await;
    let mut before = *status.borrow_and_update();
    let mut since = tokio::time::Instant::now();
    loop {
        tick.tick().await;
        if status.has_changed().is_err() {
            return;
        }
        let now = *status.borrow_and_update();
        match line(&before, &now, since.elapsed()) {
            Ok(text) => tracing::info!("{text}"),
            Err(text) => tracing::warn!("{text}"),
        }
        before = now;
        since = tokio::time::Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(finalized: u64, txs: u64, peers: usize, syncing: bool) -> ChainStatus {
        ChainStatus {
            finalized,
            included_transactions: txs,
            peers,
            syncing,
            ..ChainStatus::default()
        }
    }

    #[test]
    fn a_line_says_the_head_the_peers_and_the_rates() {
        let five = Duration::from_secs(5);
        let text = line(&status(100, 10, 3, false), &status(124, 20, 3, false), five).unwrap();
        assert!(text.starts_with("finalized #124 (0x0000…0000), "), "{text}");
        assert!(
            text.ends_with(", 3 peers, 4.8 blocks/s, 2.0 tx/s"),
            "{text}"
        );
        let text = line(&status(0, 0, 1, true), &status(6000, 0, 1, true), five).unwrap();
        assert!(text.starts_with("syncing #6000"), "{text}");
        assert!(text.contains(", 1 peer, 1200.0 blocks/s"), "{text}");
    }

    #[test]
    fn a_chain_that_finalized_nothing_is_a_warning() {
        let same = status(7, 0, 0, false);
        let text = line(&same, &same, Duration::from_secs(5)).unwrap_err();
        assert!(text.starts_with("no block finalized in 5 s: #7"), "{text}");
    }
}
