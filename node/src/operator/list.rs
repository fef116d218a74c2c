//! `drchain list`: every service's candidates in one table, as `patronictl list` shows a
//! cluster's members.

use anyhow::Result;
use drchain_rpc::views::{ServiceNodeView, ServiceView};
use drchain_rpc::DrchainApiClient;

use super::{block_on, connect, print, Names, Table};
use crate::cli::ListArgs;
use crate::client::Described;
use crate::words::json_word;

/// `drchain list [SERVICE]`.
pub fn list(args: ListArgs) -> Result<()> {
    block_on(async move {
        let client = connect(&args.read.rpc).await?;
        let mut services = client
            .failover_services()
            .await
            .doing("reading the services")?;
        if let Some(only) = &args.service {
            services.retain(|s| s.name.as_str() == only);
            if services.is_empty() {
                anyhow::bail!("no service is named {only:?}");
            }
        }
        let names = Names::fetch(&client).await?;
        print(args.read.output, &services, || render(&services, &names))
    })
}

/// The table, then a line per service in maintenance mode or without an active node.
fn render(services: &[ServiceView], names: &Names) -> String {
    let mut table = Table::new(&[
        "Service",
        "Member",
        "Endpoint",
        "Role",
        "Health",
        "Heartbeat",
        "Data lag",
        "Epoch",
    ]);
    for s in services {
        for n in &s.nodes {
            table.row(vec![
                s.name.to_string(),
                names.of(&n.node),
                n.endpoint.clone().unwrap_or_else(|| "-".into()),
                json_word(&n.role),
                n.heartbeat
                    .as_ref()
                    .map_or_else(|| "-".into(), |h| json_word(&h.health)),
                heartbeat_age(n),
                data_lag(n, s.config.max_lag_ms),
                s.epoch.to_string(),
            ]);
        }
    }
    let mut out = if services.is_empty() {
        "no services registered\n".to_owned()
    } else {
        table.render()
    };
    for s in services {
        if let Some(block) = s.paused_since_block {
            out.push_str(&format!(
                "{}: maintenance mode since #{block}: no automatic failover (drchain resume {})\n",
                s.name, s.name
            ));
        }
        match s.phase.as_str() {
            "vacant" => out.push_str(&format!("{}: no active node (vacant)\n", s.name)),
            "promoting" => {
                if let Some(p) = &s.promoting {
                    out.push_str(&format!("{}: {} is promoting\n", s.name, names.of(&p.node)));
                }
            }
            _ => {}
        }
    }
    out
}

fn heartbeat_age(n: &ServiceNodeView) -> String {
    match &n.heartbeat {
        Some(h) if h.stale => format!("{} ms (stale)", h.age_ms),
        Some(h) => format!("{} ms", h.age_ms),
        None => "never".into(),
    }
}

/// How far its data is behind the latest checkpoint; `!` beyond the RPO.
fn data_lag(n: &ServiceNodeView, max_lag_ms: u64) -> String {
    match (n.held_checkpoint, n.data_lag_ms) {
        (None, Some(_)) => "-".into(),
        (None, None) => "none !".into(),
        (Some(_), None) => "pruned !".into(),
        (Some(_), Some(lag)) if lag > max_lag_ms => format!("{lag} ms !"),
        (Some(_), Some(lag)) => format!("{lag} ms"),
    }
}
