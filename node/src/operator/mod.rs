//! The commands operators know from Patroni: `drchain list`, `switchover`, `history`,
//! `pause`, `resume` (and `completions`). Reads go through the node's JSON-RPC; admin actions
//! are signed `admin.propose` transactions, confirmed first unless `--force`.

mod history;
mod list;
mod steer;
mod table;

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};

use anyhow::{bail, Context, Result};
use drchain_rpc::views::{AdminsView, MemberView};
use drchain_rpc::DrchainApiClient;
use drchain_support::AccountId;

use crate::cli::{CompletionsArgs, Output};
use crate::client::{Described, RpcClient};

pub use history::history;
pub use list::list;
pub use steer::{pause, resume, switchover};
pub use table::Table;

/// Runs an operator command's async body on a small runtime.
fn block_on<T>(body: impl std::future::Future<Output = Result<T>>) -> Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(body)
}

/// Connects, saying which node could not be reached.
async fn connect(rpc: &str) -> Result<RpcClient> {
    let client = RpcClient::connect(rpc).await?;
    client
        .membership_admins()
        .await
        .doing(&format!("asking {rpc} for the chain's admins"))?;
    Ok(client)
}

/// Members' names (`CN=` of their certificates) by account, both ways.
#[derive(Debug, Default)]
struct Names {
    by_account: BTreeMap<AccountId, String>,
}

impl Names {
    async fn fetch(client: &RpcClient) -> Result<Self> {
        let members: Vec<MemberView> = client
            .membership_members()
            .await
            .doing("reading the members")?;
        Ok(Self {
            by_account: members
                .iter()
                .map(|m| {
                    let cn = crate::metrics::common_name(&m.subject).to_owned();
                    (m.account, cn)
                })
                .collect(),
        })
    }

    /// `alice`, or the account abbreviated when it has no name.
    fn of(&self, account: &AccountId) -> String {
        match self.by_account.get(account) {
            Some(name) if !name.is_empty() => name.clone(),
            _ => {
                let full = account.to_string();
                format!("{}…", &full[..full.len().min(10)])
            }
        }
    }

    /// A node given by name or `0x` account.
    fn resolve(&self, given: &str) -> Result<AccountId> {
        if given.starts_with("0x") {
            return serde_json::from_value(serde_json::Value::String(given.to_owned()))
                .with_context(|| format!("{given:?} is not a 0x account (64 hex digits)"));
        }
        let found: Vec<_> = self
            .by_account
            .iter()
            .filter(|(_, name)| name.as_str() == given)
            .collect();
        match found.as_slice() {
            [(account, _)] => Ok(**account),
            [] => bail!(
                "no member is named {given:?}; members: {}",
                self.by_account
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => bail!("several members are named {given:?}: give the 0x account"),
        }
    }
}

/// Prints `value` as pretty JSON (`--output json`) or `table` otherwise.
fn print(
    output: Output,
    value: &impl serde::Serialize,
    table: impl FnOnce() -> String,
) -> Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Table => print!("{}", table()),
    }
    Ok(())
}

/// Asks `question` on the terminal; without one, refuses unless `--force` was given.
fn confirm(question: &str, force: bool) -> Result<()> {
    if force {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("{question} — not confirmed: no terminal to ask on; add --force to proceed");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer)?;
    if matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes") {
        Ok(())
    } else {
        bail!("aborted: not confirmed")
    }
}

/// Why a command that needs the admins cannot be signed as given: no key, or a key that is
/// not an admin's. Names the admins and the threshold.
fn admin_key_problem(
    what: &str,
    signer: Option<AccountId>,
    admins: &AdminsView,
    names: &Names,
) -> Option<String> {
    let listed = admins
        .admins
        .iter()
        .map(|a| format!("{} ({a})", names.of(a)))
        .collect::<Vec<_>>()
        .join(", ");
    let why = match signer {
        None => format!("{what} needs the admins' approval, so it must be signed by an admin: give --key FILE (an admin's key) or --dev NAME on a test chain"),
        Some(s) if !admins.admins.contains(&s) => {
            format!("{what} needs the admins' approval, and the key given ({s}) is not an admin's")
        }
        Some(_) => return None,
    };
    Some(format!(
        "{why}. The chain's admins: {listed}; {} of them must approve.",
        admins.threshold
    ))
}

/// `drchain completions SHELL`.
pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut command = <crate::cli::Cli as clap::CommandFactory>::command();
    clap_complete::generate(args.shell, &mut command, "drchain", &mut std::io::stdout());
    Ok(())
}
