//! `drchain restore`: rebuilds a recorded checkpoint of a service into a new directory.
//!
//! The manifest root comes from the chain; the node behind `--rpc` fetches whatever it lacks
//! from the members that hold it (`replication_fetch`), and this command then reads the
//! objects it still lacks locally through the same transfer messages members exchange —
//! raw over `POST /replication/transfer` on the RPC port, or, from a node without that path,
//! as hex in `replication_transfer` — verifying every manifest and chunk against its name. Chunks
//! already in the local cache (a previous restore, or a node's own chunk store) are not
//! fetched again. The files are written beside `--out` and renamed into place once durable.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use drchain_replication::materialize::write_checkpoint;
use drchain_replication::transfer::{
    Fetch, PeerVerdict, TransferRequest, TransferResponse, MAX_RESPONSE_BYTES,
};
use drchain_replication::ChunkStore;
use drchain_support::{ServiceName, H256};
use futures::future::join_all;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use parity_scale_codec::Encode;

use crate::cli::RestoreArgs;
use crate::client::{Described, RpcClient};
use drchain_rpc::transfer_http::TRANSFER_PATH;
use drchain_rpc::DrchainApiClient;

/// The one "peer" a restore reads from: the node behind `--rpc`.
type Node = ();

/// `drchain restore`.
pub fn restore(args: RestoreArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(args))
}

async fn run(args: RestoreArgs) -> Result<()> {
    let service = ServiceName::new(&args.service)
        .map_err(|e| anyhow::anyhow!("bad service name {:?}: {e}", args.service))?;
    let out = absolute(&args.out)?;
    let name = out
        .file_name()
        .context("--out must name a directory")?
        .to_string_lossy()
        .into_owned();
    let parent = out.parent().unwrap_or(Path::new("/")).to_path_buf();
    if out.exists() && !is_empty_dir(&out) {
        bail!(
            "{} exists and is not empty: restore into a new directory",
            out.display()
        );
    }
    let client = RpcClient::connect(&args.rpc).await?;
    let checkpoints = client
        .checkpoints_list(service.clone())
        .await
        .doing(&format!(
            "asking {} for the checkpoints of {service}",
            args.rpc
        ))?;
    let chosen = match args.checkpoint.as_str() {
        "latest" => checkpoints.last(),
        seq => {
            let seq: u64 = seq
                .parse()
                .with_context(|| format!("--checkpoint {seq:?} is neither a number nor latest"))?;
            checkpoints.iter().find(|c| c.sequence == seq)
        }
    };
    let Some(chosen) = chosen else {
        let kept: Vec<u64> = checkpoints.iter().map(|c| c.sequence).collect();
        bail!(
            "no checkpoint {} of {service} on chain (retained: {kept:?})",
            args.checkpoint
        );
    };
    let root = chosen.checkpoint.manifest_root;
    eprintln!(
        "restoring {service} checkpoint {} (epoch {}, {} bytes, root {root})",
        chosen.sequence, chosen.checkpoint.epoch, chosen.checkpoint.size_bytes
    );
    client
        .replication_fetch(root, Some(args.timeout_ms))
        .await
        .doing("asking the node to gather the checkpoint from the members")?;

    let cache = match &args.cache {
        Some(dir) => absolute(dir)?,
        None => parent.join(format!(".{name}.chunks")),
    };
    let store = ChunkStore::open(&cache)
        .with_context(|| format!("opening the chunk cache {}", cache.display()))?;
    let started = Instant::now();
    let mut carrier = Carrier::new(&client, &args.rpc);
    let fetched = fetch(&mut carrier, &store, root).await?;
    let manifest = fetched.manifest;
    let staging = parent.join(format!(".{name}.restoring"));
    let write = {
        let staging = staging.clone();
        tokio::task::spawn_blocking(move || {
            if staging.exists() {
                std::fs::remove_dir_all(&staging)
                    .with_context(|| format!("removing {}", staging.display()))?;
            }
            write_checkpoint(&manifest, &store, &staging)?;
            anyhow::Ok(manifest)
        })
    };
    let manifest = match write.await.context("the writing task failed")? {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&staging);
            return Err(e.context(format!("writing the files under {}", staging.display())));
        }
    };
    if out.exists() {
        std::fs::remove_dir(&out).with_context(|| format!("replacing {}", out.display()))?;
    }
    std::fs::rename(&staging, &out)
        .with_context(|| format!("moving {} to {}", staging.display(), out.display()))?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    let size = manifest.size();
    println!(
        "restored {service} checkpoint {} into {}: {} files, {size} bytes in {secs:.2} s ({:.1} MB/s); {} bytes received, {} chunks reused from {}",
        chosen.sequence,
        out.display(),
        manifest.files.len(),
        size as f64 / 1e6 / secs,
        fetched.received_bytes,
        fetched.reused_chunks,
        cache.display(),
    );
    Ok(())
}

struct Fetched {
    manifest: drchain_replication::Manifest,
    received_bytes: u64,
    reused_chunks: usize,
}

/// Carries transfer requests to the node: raw bytes over HTTP, one connection per request in
/// flight, or JSON-RPC when the node does not serve the raw path.
struct Carrier<'a> {
    client: &'a RpcClient,
    /// `host:port` of the node's RPC server; `None` once the raw path proved unavailable.
    raw: Option<String>,
    connections: Vec<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl<'a> Carrier<'a> {
    fn new(client: &'a RpcClient, rpc: &str) -> Self {
        let raw = rpc
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "ws"))
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_owned());
        Self {
            client,
            raw,
            connections: vec![],
        }
    }

    /// Sends `requests` concurrently; their responses, in order.
    async fn send(&mut self, requests: &[TransferRequest]) -> Result<Vec<Vec<u8>>> {
        if let Some(addr) = self.raw.clone() {
            match self.send_raw(&addr, requests).await {
                Ok(answers) => return Ok(answers),
                Err(e) => {
                    tracing::debug!(error = %e, "raw transfer unavailable; using JSON-RPC");
                    self.raw = None;
                }
            }
        }
        let client = self.client;
        let answers = join_all(requests.iter().map(|request| async move {
            let hex = client
                .replication_transfer(format!("0x{}", hex::encode(request.encode())))
                .await
                .doing("reading the checkpoint from the node (replication_transfer)")?;
            hex::decode(hex.strip_prefix("0x").unwrap_or(&hex))
                .context("the node's transfer response is not hex")
        }))
        .await;
        answers.into_iter().collect()
    }

    async fn send_raw(&mut self, addr: &str, requests: &[TransferRequest]) -> Result<Vec<Vec<u8>>> {
        while self.connections.len() < requests.len() {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .with_context(|| format!("connecting to {addr}"))?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(connection);
            self.connections.push(sender);
        }
        let answers = join_all(self.connections.iter_mut().zip(requests).map(
            |(sender, request)| async move {
                let http = hyper::Request::post(TRANSFER_PATH)
                    .header(hyper::header::HOST, addr)
                    .header(hyper::header::CONTENT_TYPE, "application/octet-stream")
                    .body(Full::new(Bytes::from(request.encode())))?;
                sender.ready().await?;
                let response = sender.send_request(http).await?;
                let status = response.status();
                let body = Limited::new(response.into_body(), MAX_RESPONSE_BYTES + 1024)
                    .collect()
                    .await
                    .map_err(|e| anyhow::anyhow!("reading the transfer response: {e}"))?
                    .to_bytes();
                if !status.is_success() {
                    bail!("{status}: {}", String::from_utf8_lossy(&body));
                }
                anyhow::Ok(body.to_vec())
            },
        ))
        .await;
        answers.into_iter().collect()
    }
}

/// Reads checkpoint `root` into `store` through the node, every object verified.
async fn fetch(carrier: &mut Carrier<'_>, store: &ChunkStore, root: H256) -> Result<Fetched> {
    let mut fetch: Fetch<Node> = Fetch::new(root, store);
    let mut received_bytes = 0u64;
    let mut reused_chunks = None;
    let progress = Progress::new();
    loop {
        if let (None, Some(m)) = (reused_chunks, fetch.manifest()) {
            reused_chunks = Some(m.chunk_ids().len().saturating_sub(fetch.remaining()));
        }
        if fetch.is_complete() {
            break;
        }
        let requests = fetch.next_requests(&[()]);
        if requests.is_empty() {
            bail!(
                "the node does not hold the whole checkpoint ({} objects missing): no member it reached had them",
                fetch.remaining()
            );
        }
        let requests: Vec<TransferRequest> = requests.into_iter().map(|(_, r)| r).collect();
        let answers = carrier.send(&requests).await?;
        for (request, bytes) in requests.iter().zip(answers) {
            received_bytes += bytes.len() as u64;
            let response = TransferResponse::decode_bounded(&bytes)?;
            apply(&mut fetch, request, response, store)?;
        }
        progress.show(received_bytes);
    }
    store.sync()?;
    progress.done();
    let manifest = fetch
        .manifest()
        .cloned()
        .context("the fetch completed without a manifest")?;
    Ok(Fetched {
        manifest,
        received_bytes,
        reused_chunks: reused_chunks.unwrap_or(0),
    })
}

fn apply(
    fetch: &mut Fetch<Node>,
    request: &TransferRequest,
    response: TransferResponse,
    store: &ChunkStore,
) -> Result<()> {
    match fetch.on_response(&(), request, response, store)? {
        Some(PeerVerdict::Bad { reason, .. }) => {
            bail!("the node sent data that does not match its name: {reason}")
        }
        None => Ok(()),
    }
}

/// Bytes and MB/s on stderr, when it is a terminal.
struct Progress {
    started: Instant,
    terminal: bool,
}

impl Progress {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        }
    }

    fn show(&self, bytes: u64) {
        if self.terminal {
            let secs = self.started.elapsed().as_secs_f64().max(1e-6);
            eprint!(
                "\r{:.1} MB received, {:.1} MB/s   ",
                bytes as f64 / 1e6,
                bytes as f64 / 1e6 / secs
            );
        }
    }

    fn done(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    if path.is_absolute() {
        Ok(path.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(path))
    }
}

fn is_empty_dir(path: &Path) -> bool {
    std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none())
}
