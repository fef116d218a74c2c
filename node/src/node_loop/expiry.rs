//! Warnings before a member's admission ends by time (its certificate's or its CA's end): a
//! validator leaves the set then, and enough of them leaving at once shrinks the quorum, so
//! operators hear of it well before, in the log as in metrics and `drchain status`.

use std::time::{Duration, Instant};

use drchain_support::Overlay;

use super::NodeLoop;

/// How long before its end a member's certificate is warned about.
const WARN_BEFORE_MS: u64 = 14 * 86_400_000;
/// How often the warning repeats per member.
const REPEAT: Duration = Duration::from_secs(3600);

impl NodeLoop {
    /// After a block of time `now_ms`: the expiry gauges, and a warning per member whose
    /// admission ends within [`WARN_BEFORE_MS`] (or ended), at most once per [`REPEAT`].
    pub(super) fn watch_expiries(&mut self, now_ms: u64) {
        let state = self.driver.store().state();
        self.metrics.record_members(&state, now_ms);
        let overlay = Overlay::new(&state);
        for (account, m) in pallet_membership::Members::iter(&overlay) {
            let until = pallet_membership::admitted_until(&overlay, &m);
            if m.revoked.is_some() || until > now_ms + WARN_BEFORE_MS {
                continue;
            }
            if self
                .expiry_warned
                .get(&account)
                .is_some_and(|at| at.elapsed() < REPEAT)
            {
                continue;
            }
            self.expiry_warned.insert(account, Instant::now());
            let name = crate::metrics::common_name(&m.subject);
            if until <= now_ms {
                tracing::warn!(
                    member = name, %account, role = ?m.role,
                    "certificate (or its CA) has expired: the member is not admitted and a validator leaves the set; rotate it (docs/operations.md, Certificate rotation)"
                );
            } else {
                tracing::warn!(
                    member = name, %account, role = ?m.role,
                    hours_left = (until - now_ms) / 3_600_000,
                    "certificate (or its CA) expires soon: rotate it before then (docs/operations.md, Certificate rotation)"
                );
            }
        }
    }
}
