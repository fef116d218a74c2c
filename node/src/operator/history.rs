//! `drchain history SERVICE`: the service's failover timeline as a table (Patroni's
//! `history`), from `failover_timeline`.

use anyhow::Result;
use drchain_rpc::timeline::{ElectionOutcome, Transition, TransitionKind};
use drchain_rpc::views::TimelineView;
use drchain_rpc::DrchainApiClient;
use drchain_support::ServiceName;

use super::{block_on, connect, print, Names, Table};
use crate::cli::HistoryArgs;
use crate::client::Described;
use crate::words::json_word;

/// `drchain history SERVICE`.
pub fn history(args: HistoryArgs) -> Result<()> {
    block_on(async move {
        let service = ServiceName::new(&args.service)
            .map_err(|e| anyhow::anyhow!("bad service name {:?}: {e}", args.service))?;
        let client = connect(&args.read.rpc).await?;
        let timeline: TimelineView = client
            .failover_timeline(service, Some(args.limit))
            .await
            .doing(&format!("reading the timeline of {}", args.service))?;
        let names = Names::fetch(&client).await?;
        print(args.read.output, &timeline, || render(&timeline, &names))
    })
}

fn render(timeline: &TimelineView, names: &Names) -> String {
    if timeline.transitions.is_empty() {
        return format!("{}: no transitions recorded\n", timeline.service);
    }
    let mut table = Table::new(&[
        "Time (UTC)",
        "Block",
        "Epoch",
        "Event",
        "Reason",
        "From",
        "To",
        "Silent",
        "Promoted in",
        "Outcome",
    ]);
    let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v} ms"));
    for t in &timeline.transitions {
        let who = |a: Option<drchain_support::AccountId>| {
            a.map_or_else(|| "-".to_owned(), |a| names.of(&a))
        };
        table.row(vec![
            utc(t.timestamp),
            format!("#{}", t.block),
            t.epoch.map_or_else(|| "-".into(), |e| e.to_string()),
            event(t),
            t.reason.map_or_else(|| "-".into(), |r| json_word(&r)),
            who(t.from),
            who(t.to),
            ms(t.silent_ms),
            ms(t.promoted_after_ms),
            outcome(t),
        ]);
    }
    table.render()
}

fn event(t: &Transition) -> String {
    match t.kind {
        TransitionKind::Elected if t.from.is_some() => "failover".into(),
        TransitionKind::Elected => "elected".into(),
        TransitionKind::Vacant => "vacant".into(),
        TransitionKind::Paused => "paused".into(),
        TransitionKind::Resumed => "resumed".into(),
    }
}

fn outcome(t: &Transition) -> String {
    let mut text = match t.outcome {
        Some(ElectionOutcome::Promoted) => "promoted".to_owned(),
        Some(ElectionOutcome::Promoting) => "promoting".to_owned(),
        Some(ElectionOutcome::NotPromoted) => "not promoted".to_owned(),
        None => String::new(),
    };
    if let Some(lost) = t.data_loss_ms {
        text.push_str(&format!(" (lost {lost} ms of data)"));
    }
    if let Some(lag) = t.withheld_lag_ms {
        text.push_str(&match lag {
            Some(lag) => format!("withheld: freshest standby {lag} ms behind"),
            None => "withheld: no standby holds data".to_owned(),
        });
    }
    text
}

/// `2026-12-05 19:02:11.123` from milliseconds since the epoch.
pub fn utc(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:03}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        ms % 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_print_as_utc_calendar_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00.000");
        assert_eq!(utc(1_795_000_000_123), "2026-11-18 11:06:40.123");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00.000");
    }
}
