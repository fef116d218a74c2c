//! What each subcommand does.

use std::path::Path;

use anyhow::{bail, Context, Result};
use drchain_runtime::dev::dev_key;
use drchain_support::AccountId;
use ed25519_dalek::SigningKey;
use pallet_membership::certgen::{self, CaKey, CertParams};
use pallet_membership::x509;

use crate::cli::{BuildSpecArgs, CaAlgorithm, CertCommand, Cli, Command, KeyCommand, RoleArg};
use crate::{chain_spec, keys};
use drchain_consensus::clock::Clock as _;

const DAY_MS: u64 = 86_400_000;

/// Runs the parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Key(cmd) => key(cmd),
        Command::Cert(cmd) => cert(cmd),
        Command::BuildSpec(args) => build_spec(args),
        Command::Run(args) => crate::run::run(args),
        Command::PurgeChain(args) => crate::run::purge_chain(args),
        Command::Tx(args) => crate::client::tx(args),
        Command::Status(args) => crate::status::status(args),
        Command::Bench(args) => crate::bench::bench(args),
        Command::BenchJoin(args) => crate::bench_join::bench_join(args),
        Command::BenchDisk(args) => crate::bench_disk::bench_disk(args),
        Command::ExportState(args) => crate::chain_io::export_state_command(args),
        Command::ImportState(args) => crate::chain_io::import_state_command(args),
        Command::ExportBlocks(args) => crate::chain_io::export_blocks_command(args),
        Command::ImportBlocks(args) => crate::chain_io::import_blocks_command(args),
        Command::Proxy(args) => crate::proxy::proxy(args),
        Command::Restore(args) => crate::restore::restore(args),
        Command::List(args) => crate::operator::list(args),
        Command::Switchover(args) => crate::operator::switchover(args),
        Command::History(args) => crate::operator::history(args),
        Command::Pause(args) => crate::operator::pause(args),
        Command::Resume(args) => crate::operator::resume(args),
        Command::Completions(args) => crate::operator::completions(args),
    }
}

fn now_ms() -> u64 {
    drchain_consensus::clock::SystemClock.now().wall_ms
}

/// `now` plus `days`, refusing validity periods no certificate can encode.
fn expiry(now: u64, days: u64) -> Result<u64> {
    days.checked_mul(DAY_MS)
        .and_then(|d| now.checked_add(d))
        .filter(|_| days <= 100 * 365)
        .ok_or_else(|| anyhow::anyhow!("--days {days} is too large (at most 36500)"))
}

fn new_ed25519() -> SigningKey {
    SigningKey::generate(&mut rand_core::OsRng)
}

fn key(cmd: KeyCommand) -> Result<()> {
    match cmd {
        KeyCommand::Generate { out, dev } => {
            let key = match dev {
                Some(name) => dev_key(&name),
                None => new_ed25519(),
            };
            let pem = keys::ed25519_pem(&key)?;
            match out {
                Some(path) => {
                    keys::write_secret(&path, &pem)?;
                    eprintln!("Secret key written to {}", path.display());
                }
                None => print!("{pem}"),
            }
            eprintln!("Account: {}", AccountId::from(&key));
            Ok(())
        }
        KeyCommand::Inspect { file, peer_id } => {
            let key = keys::read_ed25519(&file)?;
            let account = AccountId::from(&key);
            if peer_id {
                let id = crate::network::peer_id_of(&account)
                    .context("the key is not a valid Ed25519 public key")?;
                println!("{id}");
            } else {
                println!("{account}");
            }
            Ok(())
        }
    }
}

fn write_pem_cert(path: &Path, der: &[u8]) -> Result<()> {
    let pem = certgen::to_pem(der)?;
    std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))
}

fn read_cert(path: &Path) -> Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading certificate {}", path.display()))?;
    x509::certificate_der(&bytes).with_context(|| format!("certificate {}", path.display()))
}

fn cert(cmd: CertCommand) -> Result<()> {
    match cmd {
        CertCommand::CaNew {
            key,
            key_out,
            algorithm,
            cert_out,
            subject,
            days,
        } => {
            let ca_key = match (&key, algorithm.unwrap_or(CaAlgorithm::Ed25519)) {
                (Some(path), _) => keys::read_ca_key(path)?,
                (None, CaAlgorithm::Ed25519) => CaKey::Ed25519(new_ed25519()),
                (None, CaAlgorithm::P256) => {
                    CaKey::P256(p256::ecdsa::SigningKey::random(&mut rand_core::OsRng))
                }
            };
            let now = now_ms();
            let params = CertParams {
                subject,
                serial: now,
                not_before_ms: now.saturating_sub(60_000),
                not_after_ms: expiry(now, days)?,
            };
            let der = certgen::new_ca(&ca_key, &params)?;
            if let Some(path) = key_out {
                keys::write_secret(&path, &keys::ca_key_pem(&ca_key)?)?;
                eprintln!("CA key written to {}", path.display());
            }
            write_pem_cert(&cert_out, &der)?;
            eprintln!("CA certificate written to {}", cert_out.display());
            println!("{}", drchain_support::blake3_hash(&der));
            Ok(())
        }
        CertCommand::Issue {
            ca_cert,
            ca_key,
            subject_key,
            account,
            name,
            role,
            days,
            serial,
            out,
        } => {
            let ca_der = read_cert(&ca_cert)?;
            let ca_parsed = x509::parse(&ca_der)
                .with_context(|| format!("CA certificate {}", ca_cert.display()))?;
            if !ca_parsed.is_ca() {
                bail!(
                    "{} is not a CA certificate (basicConstraints cA is not TRUE)",
                    ca_cert.display()
                );
            }
            let ca_key = keys::read_ca_key(&ca_key)?;
            let account = match (subject_key, account) {
                (Some(path), _) => AccountId::from(&keys::read_ed25519(&path)?),
                (None, Some(hex)) => hex
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--account {hex:?}: {e}"))?,
                (None, None) => bail!("give --subject-key or --account"),
            };
            if name.is_empty() || name.contains([',', '=', '+', '"', '\\', '<', '>', ';']) {
                bail!("--name {name:?} must be non-empty and free of , = + \" \\ < > ;");
            }
            let ou = match role {
                RoleArg::Validator => "validator",
                RoleArg::Member => "member",
            };
            let now = now_ms();
            let serial = serial.unwrap_or_else(|| {
                let mut seed = account.0.to_vec();
                seed.extend_from_slice(&now.to_le_bytes());
                let h = drchain_support::blake3_hash(&seed);
                u64::from_le_bytes([
                    h.0[0],
                    h.0[1],
                    h.0[2],
                    h.0[3],
                    h.0[4],
                    h.0[5],
                    h.0[6],
                    h.0[7] & 0x7f,
                ])
            });
            let params = CertParams {
                subject: format!("CN={name},OU={ou},O=drchain"),
                serial,
                not_before_ms: now.saturating_sub(60_000),
                not_after_ms: expiry(now, days)?,
            };
            let der = certgen::issue(&ca_key, &ca_der, &account, &params)?;
            write_pem_cert(&out, &der)?;
            eprintln!("Certificate for {account} written to {}", out.display());
            Ok(())
        }
        CertCommand::Verify { cas, cert, at_ms } => {
            let anchors = cas
                .iter()
                .map(|p| {
                    let der = read_cert(p)?;
                    x509::check_trust_anchor(&der)
                        .with_context(|| format!("CA certificate {}", p.display()))
                })
                .collect::<Result<Vec<_>>>()?;
            let der = read_cert(&cert)?;
            let at = at_ms.unwrap_or_else(now_ms);
            let v = x509::verify_member(&der, &anchors, at, |_| false)
                .with_context(|| format!("{} does not verify", cert.display()))?;
            let role = match v.certificate.granted_role {
                Some(pallet_membership::MemberRole::Validator) => "validator",
                Some(pallet_membership::MemberRole::Member) => "member",
                None => "any (no OU)",
            };
            println!("OK");
            println!("subject:     {}", v.certificate.subject);
            println!("issuer:      {}", v.certificate.issuer);
            println!("account:     {}", v.account);
            println!("role:        {role}");
            println!(
                "valid:       {} .. {} (ms)",
                v.certificate.not_before, v.certificate.not_after
            );
            println!("fingerprint: {}", v.certificate.fingerprint);
            Ok(())
        }
    }
}

fn build_spec(args: BuildSpecArgs) -> Result<()> {
    let spec = chain_spec::load(&args.chain)?;
    let genesis = spec
        .build_genesis()
        .with_context(|| format!("chain spec {}", args.chain))?;
    let json = spec.to_json();
    match args.out {
        Some(path) => {
            std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?
        }
        None => print!("{json}"),
    }
    eprintln!("Genesis hash: {}", genesis.hash());
    Ok(())
}
