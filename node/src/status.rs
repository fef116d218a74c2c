//! `drchain status`: the node's view of the chain, its services and members as tables.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use drchain_rpc::views::{DiskView, HeaderView, MemberView, ServiceView, SystemHealth};
use drchain_rpc::{DrchainApiClient, SubstrateApiClient};
use drchain_support::AccountId;

use crate::cli::StatusArgs;
use crate::client::{header_number, Described, RpcClient};
use crate::words::json_word;

/// `drchain status`.
pub fn status(args: StatusArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let client = RpcClient::connect(&args.rpc).await?;
        // The first call is where an unreachable node shows: say which.
        let chain = client.system_chain().await.doing(&format!(
            "asking {} for the chain's name (system_chain)",
            args.rpc
        ))?;
        let name = client
            .system_name()
            .await
            .doing("reading the node's name")?;
        let health = client
            .system_health()
            .await
            .doing("reading the node's health")?;
        let head = client
            .chain_get_header(None)
            .await
            .doing("reading the finalized head")?
            .context("the node has no head")?;
        let services = client
            .failover_services()
            .await
            .doing("reading the services")?;
        let members = client
            .membership_members()
            .await
            .doing("reading the members")?;
        let disk = client
            .system_disk()
            .await
            .doing("reading the node's disk usage")?;
        if args.json {
            let out = serde_json::json!({
                "chain": chain, "node": name, "health": health, "head": head,
                "services": services, "disk": disk,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
            return Ok(());
        }
        print!(
            "{}",
            render_status(&chain, &name, &health, &head, &services, &members)
        );
        if let Some(disk) = &disk {
            print!("\n{}", render_disk(disk));
        }
        Ok(())
    })
}

/// Short names of members from their certificate subjects (`CN=...`).
fn member_names(members: &[MemberView]) -> BTreeMap<String, String> {
    members
        .iter()
        .map(|m| {
            let cn = crate::metrics::common_name(&m.subject);
            (m.account.to_string(), cn.to_owned())
        })
        .collect()
}

fn short(account: &AccountId, names: &BTreeMap<String, String>) -> String {
    let full = account.to_string();
    let abbreviated = format!("{}…", &full[..full.len().min(10)]);
    match names.get(&full) {
        Some(name) => format!("{name} ({abbreviated})"),
        None => abbreviated,
    }
}

/// The `disk:` line of `drchain status`: the database on disk, per kind of data, and the free
/// space left (`!` when nearly full, as the node warns).
pub fn render_disk(disk: &DiskView) -> String {
    let mb = |b: u64| b as f64 / 1e6;
    let kinds: Vec<String> = disk
        .database_bytes
        .iter()
        .filter(|(_, bytes)| **bytes > 0)
        .map(|(kind, bytes)| format!("{kind} {:.1} MB", mb(*bytes)))
        .collect();
    let kinds = if kinds.is_empty() {
        String::new()
    } else {
        format!(" ({})", kinds.join(", "))
    };
    let free = match (disk.free_bytes, disk.total_bytes) {
        (Some(free), Some(total)) if total > 0 => {
            let low = crate::disk::Space { free, total }.is_low();
            format!(
                "; {:.1} GB free of {:.1} GB{}",
                free as f64 / 1e9,
                total as f64 / 1e9,
                if low { " !" } else { "" }
            )
        }
        _ => String::new(),
    };
    let blocks = if disk.blocks_retained > 0 {
        format!(
            "; {} blocks kept from #{}",
            disk.blocks_retained, disk.oldest_block
        )
    } else {
        String::new()
    };
    format!(
        "disk: database {:.1} MB on disk{kinds}{blocks}{free}\n",
        mb(disk.database_disk_bytes)
    )
}

/// The status tables.
pub fn render_status(
    chain: &str,
    node: &str,
    health: &SystemHealth,
    head: &HeaderView,
    services: &[ServiceView],
    members: &[MemberView],
) -> String {
    use std::fmt::Write as _;
    let names = &member_names(members);
    let number = header_number(head).unwrap_or_default();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "chain {chain}, node {node}: finalized #{number} ({}), peers {}{}",
        head.hash,
        health.peers,
        if health.is_syncing { ", syncing" } else { "" }
    );
    if services.is_empty() {
        let _ = writeln!(out, "no services registered");
    }
    for s in services {
        let holder = s
            .active
            .or(s.promoting.as_ref().map(|p| p.node))
            .map_or_else(|| "-".to_owned(), |a| short(&a, names));
        let _ = writeln!(
            out,
            "\nservice {}  epoch {}  phase {}  holder {}  since #{}",
            s.name, s.epoch, s.phase, holder, s.since_block
        );
        let _ = writeln!(
            out,
            "  {:<28} {:>4}  {:<10} {:<9} {:>13}  {:>26}  endpoint",
            "node", "prio", "role", "health", "heartbeat age", "checkpoint (lag)"
        );
        for n in &s.nodes {
            let role = json_word(&n.role);
            let (health, age) = match &n.heartbeat {
                Some(h) => (
                    json_word(&h.health),
                    format!("{} ms{}", h.age_ms, if h.stale { " !" } else { "" }),
                ),
                None => ("-".to_owned(), "never".to_owned()),
            };
            // `!` marks data older than the service's RPO: not electable.
            let checkpoint = match (n.held_checkpoint, n.data_lag_ms) {
                (None, Some(_)) => "-".to_owned(), // nothing recorded yet
                (None, None) => "none !".to_owned(),
                (Some(held), None) => format!("{held} (pruned) !"),
                (Some(held), Some(lag)) => format!(
                    "{held} ({lag} ms{}){}",
                    n.data_lag_bytes
                        .filter(|b| *b > 0)
                        .map_or_else(String::new, |b| format!(", {}", human_bytes(b))),
                    if lag > s.config.max_lag_ms { " !" } else { "" }
                ),
            };
            let _ = writeln!(
                out,
                "  {:<28} {:>4}  {:<10} {:<9} {:>13}  {:>26}  {}",
                short(&n.node, names),
                n.priority,
                role,
                health,
                age,
                checkpoint,
                n.endpoint.as_deref().unwrap_or("-")
            );
        }
        if let Some(why) = withheld(s) {
            let _ = writeln!(out, "  {why}");
        }
    }
    render_members(&mut out, members, head.timestamp, names);
    out
}

/// Certificates that end within this are marked `!`: time to rotate.
const EXPIRY_WARNING_MS: u64 = 14 * 86_400_000;

/// The members table: role, whether each votes, and when its admission ends (its certificate
/// or its CA), relative to the head's time.
fn render_members(
    out: &mut String,
    members: &[MemberView],
    now: u64,
    names: &BTreeMap<String, String>,
) {
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "
members
  {:<28} {:<9} {:<6} admitted until",
        "node", "role", "votes"
    );
    for m in members.iter().filter(|m| m.revoked.is_none()) {
        let role = if m.role == pallet_membership::MemberRole::Validator {
            "validator"
        } else {
            "member"
        };
        let until = if m.admitted_until <= now {
            format!("expired {} ago !", human_duration(now - m.admitted_until))
        } else {
            let left = m.admitted_until - now;
            let mark = if left < EXPIRY_WARNING_MS { " !" } else { "" };
            format!("in {}{mark}", human_duration(left))
        };
        let _ = writeln!(
            out,
            "  {:<28} {:<9} {:<6} {until}",
            short(&m.account, names),
            role,
            if m.validator { "yes" } else { "no" },
        );
    }
}

/// `3 d`, `5 h`, `12 min`, `40 s`.
fn human_duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        s if s >= 2 * 86_400 => format!("{} d", s / 86_400),
        s if s >= 2 * 3_600 => format!("{} h", s / 3_600),
        s if s >= 120 => format!("{} min", s / 60),
        s => format!("{s} s"),
    }
}

/// `1.2 MB`, `340 kB`, `12 B`.
fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1_000_000 => format!("{:.1} MB", b as f64 / 1e6),
        b if b >= 1_000 => format!("{:.0} kB", b as f64 / 1e3),
        b => format!("{b} B"),
    }
}

/// Why a vacant service stays vacant, when it is the RPO: every live candidate's data is
/// older than `max_lag_ms` and losing it was not allowed.
fn withheld(s: &ServiceView) -> Option<String> {
    if s.phase != "vacant" || s.config.allow_data_loss {
        return None;
    }
    let live: Vec<_> = s
        .nodes
        .iter()
        .filter(|n| n.heartbeat.as_ref().is_some_and(|h| !h.stale))
        .collect();
    let beyond = |n: &&drchain_rpc::views::ServiceNodeView| {
        n.data_lag_ms.is_none_or(|lag| lag > s.config.max_lag_ms)
    };
    (!live.is_empty() && live.iter().all(beyond)).then(|| {
        format!(
            "no promotion: every live candidate's data is older than the RPO (max_lag_ms {}); \
             `drchain tx --admin failover switchover` naming one accepts the loss",
            s.config.max_lag_ms
        )
    })
}

#[cfg(test)]
mod disk_line_tests {
    use super::*;

    #[test]
    fn the_disk_line_names_each_kind_and_flags_a_nearly_full_disk() {
        let mut disk = DiskView {
            database_bytes: [
                ("blocks".to_owned(), 2_500_000),
                ("events".to_owned(), 0),
                ("state".to_owned(), 1_200_000),
            ]
            .into(),
            database_disk_bytes: 9_000_000,
            free_bytes: Some(40_000_000_000),
            total_bytes: Some(100_000_000_000),
            oldest_block: 1_201,
            blocks_retained: 16_384,
        };
        assert_eq!(
            render_disk(&disk),
            "disk: database 9.0 MB on disk (blocks 2.5 MB, state 1.2 MB); 16384 blocks kept \
             from #1201; 40.0 GB free of 100.0 GB\n"
        );
        disk.free_bytes = Some(500_000_000);
        assert!(
            render_disk(&disk).ends_with(" !\n"),
            "{}",
            render_disk(&disk)
        );
    }
}
