//! The admin actions: `drchain switchover`, `pause` and `resume`. Each checks the service and
//! the signer first (saying who the admins are when the key is not one), asks for
//! confirmation, submits `admin.propose`, and reports whether the call ran or waits for more
//! approvals.

use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use drchain_rpc::views::ServiceView;
use drchain_rpc::DrchainApiClient;
use drchain_runtime::pallet_failover::Call as FailoverCall;
use drchain_runtime::{AdminCall, RuntimeCall};
use drchain_support::{AccountId, ServiceName};
use serde::Serialize;
use serde_json::Value;

use super::{admin_key_problem, block_on, confirm, connect, print, Names};
use crate::cli::{AdminArgs, PauseArgs, SwitchoverArgs};
use crate::client::{sign_and_watch, signing_key, Described, RpcClient};

/// What an admin action did, for `--output json`.
#[derive(Debug, Serialize)]
struct ActionReport {
    service: String,
    action: &'static str,
    /// The proposal's hash (blake3 of the call).
    proposal: Option<String>,
    /// Whether the call ran (the admin threshold was reached).
    executed: bool,
    /// The block that finalized it.
    block: u64,
    /// After a switchover: the node that became active, its epoch and how long it took.
    active: Option<String>,
    epoch: Option<u64>,
    took_ms: Option<u64>,
}

/// `drchain switchover SERVICE [--to NODE]`.
pub fn switchover(args: SwitchoverArgs) -> Result<()> {
    block_on(async move {
        let client = connect(&args.read.rpc).await?;
        let names = Names::fetch(&client).await?;
        let view = service(&client, &args.service).await?;
        let target = args.to.as_deref().map(|t| names.resolve(t)).transpose()?;
        if let Some(target) = target {
            if !view.config.candidates.contains(&target) {
                bail!(
                    "{} is not a candidate of {}; candidates: {}",
                    names.of(&target),
                    view.name,
                    view.config
                        .candidates
                        .iter()
                        .map(|c| names.of(c))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        if let Some(p) = &view.promoting {
            // The chain refuses it too; say so before anything is signed.
            bail!(
                "{} is promoting {} (epoch {}): switch over once it is active",
                view.name,
                names.of(&p.node),
                view.epoch
            );
        }
        let from = view
            .active
            .map_or_else(|| "no active node".to_owned(), |a| names.of(&a));
        let to = target.map_or_else(
            || "the best eligible candidate".to_owned(),
            |t| names.of(&t),
        );
        let call = FailoverCall::Switchover {
            service: view.name.clone(),
            target,
        };
        let question = match view.active {
            Some(_) => format!(
                "Switch {} (epoch {}) over from {from} to {to}? Clients of {from} are cut off.",
                view.name, view.epoch
            ),
            None => format!(
                "Make {to} active for {} ({}, epoch {})?",
                view.name, view.phase, view.epoch
            ),
        };
        let mut report =
            submit(&client, &names, &args.admin, "switchover", &question, call).await?;
        if report.executed {
            let started = Instant::now();
            let (node, epoch) = await_active(
                &client,
                &view.name,
                view.epoch,
                Duration::from_secs(args.admin.timeout),
            )
            .await?;
            report.active = Some(names.of(&node));
            report.epoch = Some(epoch);
            report.took_ms = Some(started.elapsed().as_millis() as u64);
        }
        print(args.read.output, &report, || describe(&report))
    })
}

/// `drchain pause SERVICE`.
pub fn pause(args: PauseArgs) -> Result<()> {
    maintenance(args, true)
}

/// `drchain resume SERVICE`.
pub fn resume(args: PauseArgs) -> Result<()> {
    maintenance(args, false)
}

fn maintenance(args: PauseArgs, pause: bool) -> Result<()> {
    block_on(async move {
        let client = connect(&args.read.rpc).await?;
        let names = Names::fetch(&client).await?;
        let view = service(&client, &args.service).await?;
        match (pause, view.paused_since_block) {
            (true, Some(block)) => bail!("{} is already paused (since #{block})", view.name),
            (false, None) => bail!("{} is not paused", view.name),
            _ => {}
        }
        let (action, call, question) = if pause {
            (
                "pause",
                FailoverCall::Pause {
                    service: view.name.clone(),
                },
                format!(
                    "Pause {}? While paused nobody takes over if its active node fails.",
                    view.name
                ),
            )
        } else {
            (
                "resume",
                FailoverCall::Resume {
                    service: view.name.clone(),
                },
                format!(
                    "Resume {}? Automatic failover applies again from the next block.",
                    view.name
                ),
            )
        };
        let report = submit(&client, &names, &args.admin, action, &question, call).await?;
        print(args.read.output, &report, || describe(&report))
    })
}

async fn service(client: &RpcClient, name: &str) -> Result<ServiceView> {
    let service =
        ServiceName::new(name).map_err(|e| anyhow::anyhow!("bad service name {name:?}: {e}"))?;
    client
        .failover_service(service)
        .await
        .doing(&format!("reading service {name}"))
}

/// Checks the key, confirms, and proposes `call` as admin; reads the outcome from the events.
async fn submit(
    client: &RpcClient,
    names: &Names,
    admin: &AdminArgs,
    action: &'static str,
    question: &str,
    call: FailoverCall,
) -> Result<ActionReport> {
    let service = call_service(&call);
    let admins = client
        .membership_admins()
        .await
        .doing("reading the admins")?;
    let key = match (&admin.key, &admin.dev) {
        (None, None) => None,
        (key, dev) => Some(signing_key(key.as_deref(), dev.as_deref())?),
    };
    let signer = key.as_ref().map(AccountId::from);
    if let Some(problem) = admin_key_problem(action, signer, &admins, names) {
        bail!(problem);
    }
    let key = key.context("no key")?;
    confirm(question, admin.force)?;
    let proposal = RuntimeCall::Admin(AdminCall::Propose {
        call: Box::new(RuntimeCall::Failover(call)),
    });
    let (outcome, _) = sign_and_watch(
        client,
        &key,
        &proposal,
        None,
        Duration::from_secs(admin.timeout),
    )
    .await?;
    if let Err(e) = outcome.result {
        bail!("the proposal failed: {e}");
    }
    let admin_event = |name: &str| {
        outcome
            .events
            .iter()
            .find_map(|e| e.get("admin").and_then(|a| a.get(name)).cloned())
    };
    let proposal_hash = admin_event("proposed")
        .and_then(|p| p.get("proposal").and_then(Value::as_str).map(str::to_owned));
    let executed = match admin_event("executed") {
        Some(e) => match e.get("result").and_then(Value::as_str) {
            Some("ok") => true,
            Some(error) => bail!("{action} was refused by the chain: {error}"),
            None => bail!("{action}: the chain's answer has no result: {e}"),
        },
        None => false,
    };
    Ok(ActionReport {
        service,
        action,
        proposal: proposal_hash,
        executed,
        block: outcome.number,
        active: None,
        epoch: None,
        took_ms: None,
    })
}

/// The service an admin action is about.
fn call_service(call: &FailoverCall) -> String {
    match call {
        FailoverCall::Switchover { service, .. }
        | FailoverCall::Pause { service }
        | FailoverCall::Resume { service }
        | FailoverCall::PromotionComplete { service, .. }
        | FailoverCall::RemoveService { name: service }
        | FailoverCall::RegisterService { name: service, .. }
        | FailoverCall::UpdateService { name: service, .. } => service.to_string(),
    }
}

/// Waits until a node completed its promotion in an epoch after `epoch`.
async fn await_active(
    client: &RpcClient,
    service: &ServiceName,
    epoch: u64,
    timeout: Duration,
) -> Result<(AccountId, u64)> {
    let deadline = Instant::now() + timeout;
    loop {
        let view = client
            .failover_service(service.clone())
            .await
            .doing("reading the service")?;
        if let (Some(node), true) = (view.active, view.epoch > epoch) {
            return Ok((node, view.epoch));
        }
        if Instant::now() >= deadline {
            bail!(
                "the switchover was recorded, but no node completed its promotion within {timeout:?} (phase {}, epoch {}); see drchain history {service}",
                view.phase,
                view.epoch
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn describe(r: &ActionReport) -> String {
    if !r.executed {
        return format!(
            "{} of {} proposed in #{} as {}; it runs once enough admins approve: drchain tx --key ADMIN.key admin approve '{{\"proposal\":\"{}\"}}'\n",
            r.action,
            r.service,
            r.block,
            r.proposal.as_deref().unwrap_or("?"),
            r.proposal.as_deref().unwrap_or("?"),
        );
    }
    match (&r.active, r.epoch, r.took_ms) {
        (Some(active), Some(epoch), Some(took)) => format!(
            "{}: {active} is active in epoch {epoch} ({took} ms after the switchover was finalized in #{})\n",
            r.service, r.block
        ),
        _ => format!("{}: {} done in #{}\n", r.service, r.action, r.block),
    }
}
