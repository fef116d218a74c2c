//! The failure-modes table: per kind of fault, what clients saw, over many schedules.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::run::StepReport;

#[derive(Debug, Default)]
struct Row {
    count: usize,
    gaps: Vec<Duration>,
    failovers: Vec<Duration>,
    hit_active: usize,
}

fn percentile(values: &mut [Duration], p: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    values.sort();
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

/// A Markdown table over `steps`: per kind, how often it ran (and hit the active), the median
/// and worst longest gap without acknowledged writes, and the median and worst time until
/// another node served when it hit the active.
pub fn failure_modes(steps: &[StepReport]) -> String {
    let mut rows: BTreeMap<&str, Row> = BTreeMap::new();
    for s in steps {
        let row = rows.entry(s.kind).or_default();
        row.count += 1;
        row.gaps.push(s.longest_gap);
        if s.hit_active {
            row.hit_active += 1;
            row.failovers.extend(s.failover);
        }
    }
    let mut out = String::from(
        "| fault | runs (on the active) | longest write gap p50 / max | failover p50 / max (n) |\n\
         |---|---|---|---|\n",
    );
    for (kind, mut row) in rows {
        let failover = if row.failovers.is_empty() {
            "—".to_owned()
        } else {
            format!(
                "{} / {} ms ({})",
                ms(percentile(&mut row.failovers, 0.5)),
                ms(percentile(&mut row.failovers, 1.0)),
                row.failovers.len()
            )
        };
        out.push_str(&format!(
            "| {kind} | {} ({}) | {} / {} ms | {failover} |\n",
            row.count,
            row.hit_active,
            ms(percentile(&mut row.gaps, 0.5)),
            ms(percentile(&mut row.gaps, 1.0)),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_has_a_row_per_kind_with_its_percentiles() {
        let step = |kind, gap, failover: Option<u64>| StepReport {
            what: String::new(),
            kind,
            hit_active: failover.is_some(),
            longest_gap: Duration::from_millis(gap),
            failover: failover.map(Duration::from_millis),
        };
        let table = failure_modes(&[
            step("crash", 1200, Some(1100)),
            step("crash", 900, Some(1000)),
            step("crash", 100, None),
            step("isolate", 50, None),
        ]);
        assert!(
            table.contains("| crash | 3 (2) | 900 / 1200 ms | 1000 / 1100 ms (2) |"),
            "{table}"
        );
        assert!(
            table.contains("| isolate | 1 (0) | 50 / 50 ms | — |"),
            "{table}"
        );
    }
}
