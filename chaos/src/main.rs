//! `drchain-chaos`: runs seeded fault schedules against a real cluster in network namespaces
//! (`run`), or the protected service inside one (`service`, started by the harness).

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use drchain_chaos::cluster::Setup;
use drchain_chaos::report::failure_modes;
use drchain_chaos::run::{run, StepReport};

#[derive(Debug, Parser)]
#[command(about = "Failover under real faults, judged from what clients saw")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs schedules `seed`, `seed + 1`, ... each on a fresh cluster (needs root).
    Run {
        /// The first schedule's seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// How many schedules to run at most.
        #[arg(long, default_value_t = 1)]
        schedules: u64,
        /// Start no new schedule after this many minutes.
        #[arg(long)]
        minutes: Option<u64>,
        /// Seconds of faults per schedule.
        #[arg(long, default_value_t = 30)]
        fault_seconds: u64,
        /// The `drchain` binary (default: beside this one).
        #[arg(long)]
        drchain: Option<PathBuf>,
        /// The chain spec to start from.
        #[arg(long, default_value = "chain-spec/local.json")]
        spec: PathBuf,
        /// Where runs keep their files (default: a temporary directory, kept when a run fails).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Names the namespaces; runs side by side need different tags and subnets.
        #[arg(long, default_value = "drc")]
        tag: String,
        /// The third octet of the subnet 10.77.X.0/24.
        #[arg(long, default_value_t = 1)]
        subnet: u8,
        /// The harness's self-check: services ignore their lease and `on_demote` does nothing,
        /// so a deposed node keeps serving; a run must then report violations.
        #[arg(long)]
        unfenced: bool,
    },
    /// The protected service (started by `run` inside a candidate's namespace).
    Service {
        #[arg(long)]
        name: String,
        #[arg(long)]
        listen: String,
        #[arg(long)]
        epoch_file: PathBuf,
        #[arg(long)]
        lease_file: PathBuf,
        #[arg(long)]
        data: PathBuf,
        /// Answer from the epoch file alone.
        #[arg(long)]
        ignore_lease: bool,
    },
}

fn libfaketime() -> Option<PathBuf> {
    std::fs::read_dir("/usr/lib")
        .ok()?
        .filter_map(Result::ok)
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.exists())
}

fn main() -> ExitCode {
    match main_result() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn main_result() -> Result<bool> {
    match Cli::parse().command {
        Command::Service {
            name,
            listen,
            epoch_file,
            lease_file,
            data,
            ignore_lease,
        } => {
            let files = drchain_chaos::service::Files {
                epoch: epoch_file,
                lease: lease_file,
                data,
                ignore_lease,
            };
            drchain_chaos::service::serve(&name, &listen, files).map(|()| true)
        }
        Command::Run {
            seed,
            schedules,
            minutes,
            fault_seconds,
            drchain,
            spec,
            dir,
            tag,
            subnet,
            unfenced,
        } => {
            let chaos = std::env::current_exe()?;
            let drchain = drchain.unwrap_or_else(|| chaos.with_file_name("drchain"));
            if !drchain.exists() {
                bail!(
                    "no drchain binary at {} (give --drchain)",
                    drchain.display()
                );
            }
            drchain_chaos::stop::install()?;
            let root = tempfile_dir(dir)?;
            let started = Instant::now();
            let budget = minutes.map(|m| Duration::from_secs(m * 60));
            let (mut all_steps, mut failed) = (Vec::<StepReport>::new(), vec![]);
            let (mut ran, mut acked, mut lost) = (0, 0, 0);
            let mut widest_loss = Duration::ZERO;
            for seed in seed..seed.saturating_add(schedules) {
                if budget.is_some_and(|b| started.elapsed() >= b) {
                    break;
                }
                drchain_chaos::stop::check()?;
                let setup = Setup {
                    drchain: drchain.clone(),
                    chaos: chaos.clone(),
                    dir: root.join(format!("seed-{seed}")),
                    base_spec: spec.clone(),
                    faketime: libfaketime(),
                    tag: tag.clone(),
                    subnet,
                    unfenced,
                };
                let outcome = run(
                    setup.clone(),
                    seed,
                    Duration::from_secs(fault_seconds),
                    &|line| println!("{line}"),
                )?;
                ran += 1;
                acked += outcome.acks;
                lost += outcome.losses.lost;
                widest_loss = widest_loss.max(outcome.losses.widest.unwrap_or_default());
                println!(
                    "seed {seed}: {} acknowledged writes ({} lost{}), {} blocks agreed, \
                     recovery {}, {}",
                    outcome.acks,
                    outcome.losses.lost,
                    outcome.losses.widest.map_or(String::new(), |w| format!(
                        ", the oldest {} ms before its epoch's end",
                        w.as_millis()
                    )),
                    outcome.blocks_checked,
                    outcome
                        .recovery
                        .map_or("none".to_owned(), |d| format!("{} ms", d.as_millis())),
                    if outcome.violations.is_empty() {
                        "no violations".to_owned()
                    } else {
                        format!("{} VIOLATIONS", outcome.violations.len())
                    }
                );
                for v in &outcome.violations {
                    println!("  VIOLATION {v}");
                }
                if outcome.violations.is_empty() {
                    let _ = std::fs::remove_dir_all(&setup.dir);
                } else {
                    println!("  logs kept in {}", setup.dir.display());
                    failed.push(seed);
                }
                all_steps.extend(outcome.steps);
            }
            println!(
                "\n{ran} schedules in {:.1} min, {} with violations{}\n",
                started.elapsed().as_secs_f64() / 60.0,
                failed.len(),
                if failed.is_empty() {
                    String::new()
                } else {
                    format!(" (seeds {failed:?})")
                }
            );
            println!(
                "{acked} acknowledged writes, {lost} lost (allowed: those acknowledged less than \
                 {} ms before their epoch's end); the oldest lost {} ms before its epoch's end\n",
                drchain_chaos::run::loss_bound().0.as_millis(),
                widest_loss.as_millis()
            );
            println!("{}", failure_modes(&all_steps));
            Ok(failed.is_empty())
        }
    }
}

/// `dir`, or a fresh directory under the system's temporary directory.
fn tempfile_dir(dir: Option<PathBuf>) -> Result<PathBuf> {
    let dir = dir.unwrap_or_else(|| {
        std::env::temp_dir().join(format!("drchain-chaos-{}", std::process::id()))
    });
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
