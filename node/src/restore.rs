//! `drchain restore`: rebuilds a recorded checkpoint of a service into a new directory.
//!
//! The manifest root comes from the chain; the node behind `--rpc` first gathers whatever it
//! lacks from the members that hold it (`replication_fetch`). This command then reads the
//! manifest and the chunks through the transfer messages members exchange — raw over
//! `POST /replication/transfer` on the RPC port with several requests in flight, or, from a
//! node that does not serve that path, as hex in `replication_transfer` — verifies each
//! against its name and writes it straight into the files ([`Assembly`]): a chunk is decoded
//! and written once. Chunks in `--cache` are not fetched. The files are written beside `--out`
//! and renamed into place once durable.

use std::collections::{HashSet, VecDeque};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use drchain_replication::compress::decode_chunk;
use drchain_replication::transfer::{
    TransferRequest, TransferResponse, MAX_OBJECTS_PER_REQUEST, MAX_RESPONSE_BYTES,
};
use drchain_replication::{Assembly, ChunkStore, Dictionary, Manifest};
use drchain_support::{ServiceName, H256};
use futures::future::try_join_all;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use parity_scale_codec::Encode;

use crate::cli::RestoreArgs;
use crate::client::{Described, RpcClient};
use drchain_rpc::transfer_http::TRANSFER_PATH;
use drchain_rpc::DrchainApiClient;

/// Transfer requests in flight to the node at once (each on its own connection): enough to
/// keep the node's disk, the network and this side's decoding busy together.
const IN_FLIGHT: usize = 6;

/// `drchain restore`.
pub fn restore(args: RestoreArgs) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
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
    let gathering = Instant::now();
    client
        .replication_fetch(root, Some(args.timeout_ms))
        .await
        .doing("asking the node to gather the checkpoint from the members")?;
    eprintln!(
        "the node holds every chunk (gathered from the members in {:.2} s)",
        gathering.elapsed().as_secs_f64()
    );

    let cache = match &args.cache {
        Some(dir) => {
            let dir = absolute(dir)?;
            let store = ChunkStore::open(&dir)
                .with_context(|| format!("opening the chunk cache {}", dir.display()))?;
            Some((dir, Arc::new(store)))
        }
        None => None,
    };
    let started = Instant::now();
    let staging = parent.join(format!(".{name}.restoring"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    let carrier = Carrier::choose(&client, &args.rpc).await?;
    let restored = match assemble(&carrier, root, cache.as_ref().map(|(_, s)| s), &staging).await {
        Ok(r) => r,
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
    let size = restored.manifest.size();
    let reused = match &cache {
        Some((dir, _)) => format!(", {} chunks reused from {}", restored.reused, dir.display()),
        None => String::new(),
    };
    println!(
        "restored {service} checkpoint {} into {}: {} files, {size} bytes in {secs:.2} s ({:.1} MB/s); {} bytes received{reused}",
        chosen.sequence,
        out.display(),
        restored.manifest.files.len(),
        size as f64 / 1e6 / secs,
        restored.received_bytes,
    );
    Ok(())
}

/// What [`assemble`] did.
struct Restored {
    manifest: Manifest,
    received_bytes: u64,
    reused: usize,
}

/// Writes checkpoint `root` into the new directory `staging`, every object verified: the
/// manifest and the dictionary first, then the chunks in `cache`, then the rest from the node,
/// [`IN_FLIGHT`] requests at a time.
async fn assemble(
    carrier: &Carrier<'_>,
    root: H256,
    cache: Option<&Arc<ChunkStore>>,
    staging: &Path,
) -> Result<Restored> {
    let received = AtomicU64::new(0);
    let manifest = match cache.and_then(|c| c.manifest(&root).ok()) {
        Some(m) => m,
        None => {
            let bytes = carrier.send(&TransferRequest::Manifest { root }).await?;
            received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let TransferResponse::Manifest { bytes: Some(bytes) } =
                TransferResponse::decode_bounded(&bytes)?
            else {
                bail!("the node does not hold the manifest {root}");
            };
            let manifest = Manifest::decode_verified(&bytes, &root)
                .context("the node sent a manifest that does not match the chain's root")?;
            if let Some(cache) = cache {
                cache.put_manifest_bytes(&root, &bytes)?;
            }
            manifest
        }
    };
    let dictionary = match manifest.dictionary {
        Some(id) => Some(dictionary(carrier, cache, id, &received).await?),
        None => None,
    };
    let assembly = {
        let (manifest, staging) = (manifest.clone(), staging.to_path_buf());
        let cache = cache.cloned();
        tokio::task::spawn_blocking(move || -> Result<(Assembly, usize)> {
            let assembly = Assembly::create(&manifest, &staging)?;
            // A chunk the cache lacks or holds damaged is fetched below.
            let reused = cache.map_or(0, |cache| {
                let cores = std::thread::available_parallelism().map_or(1, usize::from);
                assembly.place_from_store(&cache, cores)
            });
            Ok((assembly, reused))
        })
        .await
        .context("the writing task failed")??
    };
    let (assembly, reused) = (Arc::new(assembly.0), assembly.1);
    let queue = Mutex::new(VecDeque::from(assembly.unwritten()));
    let progress = Progress::new();
    let shared = Shared {
        assembly: &assembly,
        queue: &queue,
        dictionary: dictionary.as_ref(),
        cache,
        received: &received,
    };
    let workers = (0..IN_FLIGHT).map(|_| shared.work(carrier));
    let ticker = async {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            progress.show(received.load(Ordering::Relaxed));
        }
    };
    tokio::select! {
        done = try_join_all(workers) => { done?; }
        () = ticker => {}
    }
    progress.show(received.load(Ordering::Relaxed));
    progress.done();
    let assembly = Arc::into_inner(assembly).context("a writer still holds the files")?;
    tokio::task::spawn_blocking(move || assembly.finish())
        .await
        .context("the writing task failed")??;
    Ok(Restored {
        manifest,
        received_bytes: received.load(Ordering::Relaxed),
        reused,
    })
}

/// The checkpoint's dictionary, from the cache or the node, verified.
async fn dictionary(
    carrier: &Carrier<'_>,
    cache: Option<&Arc<ChunkStore>>,
    id: H256,
    received: &AtomicU64,
) -> Result<Arc<Dictionary>> {
    if let Some(d) = cache.and_then(|c| c.dictionary(&id).ok()) {
        return Ok(d);
    }
    let bytes = carrier
        .send(&TransferRequest::Objects { ids: vec![id] })
        .await?;
    received.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let encoded = match TransferResponse::decode_bounded(&bytes)? {
        TransferResponse::Objects { objects } => objects
            .into_iter()
            .find(|(got, _)| *got == id)
            .and_then(|(_, bytes)| bytes),
        _ => None,
    };
    let encoded = encoded.with_context(|| format!("the node does not hold dictionary {id}"))?;
    let plain = decode_chunk(&id, &encoded, None)
        .context("the node sent a dictionary that does not match its name")?;
    if let Some(cache) = cache {
        cache.put_encoded(&id, &encoded)?;
    }
    Ok(Arc::new(Dictionary::new(plain)))
}

/// What the workers of one restore share.
#[derive(Clone, Copy)]
struct Shared<'a> {
    assembly: &'a Arc<Assembly>,
    queue: &'a Mutex<VecDeque<H256>>,
    dictionary: Option<&'a Arc<Dictionary>>,
    cache: Option<&'a Arc<ChunkStore>>,
    received: &'a AtomicU64,
}

impl Shared<'_> {
    /// Asks the node for queued chunks until none are left, and writes what it sends.
    async fn work(self, carrier: &Carrier<'_>) -> Result<()> {
        let mut link = carrier.link().await?;
        loop {
            let ids: Vec<H256> = {
                let mut queue = self.queue.lock().map_err(|_| anyhow::anyhow!("poisoned"))?;
                let n = queue.len().min(MAX_OBJECTS_PER_REQUEST);
                queue.drain(..n).collect()
            };
            if ids.is_empty() {
                return Ok(());
            }
            let request = TransferRequest::Objects { ids: ids.clone() };
            let bytes = link.send(&request).await?;
            self.received
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            let TransferResponse::Objects { objects } = TransferResponse::decode_bounded(&bytes)?
            else {
                bail!("the node answered a request for chunks with something else");
            };
            let (assembly, cache) = (self.assembly.clone(), self.cache.cloned());
            let dictionary = self.dictionary.cloned();
            let missing = tokio::task::spawn_blocking(move || {
                write_objects(&assembly, &ids, objects, dictionary.as_deref(), cache)
            })
            .await
            .context("the writing task failed")??;
            if !missing.is_empty() {
                self.queue
                    .lock()
                    .map_err(|_| anyhow::anyhow!("poisoned"))?
                    .extend(missing);
            }
        }
    }
}

/// Writes the objects the node sent for `asked`; returns the ones it left out (to ask again).
/// An answer with none of them means the node lacks them.
fn write_objects(
    assembly: &Assembly,
    asked: &[H256],
    objects: Vec<(H256, Option<Vec<u8>>)>,
    dictionary: Option<&Dictionary>,
    cache: Option<Arc<ChunkStore>>,
) -> Result<Vec<H256>> {
    let mut left: HashSet<H256> = asked.iter().copied().collect();
    for (id, encoded) in objects {
        let Some(encoded) = encoded else { continue };
        if !left.remove(&id) {
            bail!("the node sent chunk {id}, which was not asked for");
        }
        assembly
            .place_encoded(&id, &encoded, dictionary)
            .context("the node sent data that does not match its name")?;
        if let Some(cache) = &cache {
            cache.put_encoded(&id, &encoded)?;
        }
    }
    if left.len() == asked.len() {
        bail!(
            "the node does not hold {} chunks of the checkpoint (collected since it gathered them?)",
            left.len()
        );
    }
    Ok(left.into_iter().collect())
}

/// How requests reach the node: raw bytes over HTTP, or JSON-RPC when the node does not serve
/// the raw path.
enum Carrier<'a> {
    /// `host:port` of the node's RPC server.
    Raw(String),
    Rpc(&'a RpcClient),
}

/// One connection's worth of a [`Carrier`].
enum Link<'a> {
    Raw {
        addr: &'a str,
        sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    },
    Rpc(&'a RpcClient),
}

impl<'a> Carrier<'a> {
    /// The raw path if the node answers an empty request on it, JSON-RPC otherwise.
    async fn choose(client: &'a RpcClient, rpc: &str) -> Result<Carrier<'a>> {
        let raw = rpc
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "ws"))
            .map(|(_, rest)| rest.split('/').next().unwrap_or(rest).to_owned());
        if let Some(addr) = raw {
            let carrier = Carrier::Raw(addr);
            match carrier
                .send(&TransferRequest::Objects { ids: vec![] })
                .await
            {
                Ok(_) => return Ok(carrier),
                Err(e) => tracing::debug!(error = %e, "raw transfer unavailable; using JSON-RPC"),
            }
        }
        Ok(Carrier::Rpc(client))
    }

    /// A connection of its own (HTTP/1 carries one request at a time).
    async fn link(&self) -> Result<Link<'_>> {
        match self {
            Carrier::Raw(addr) => {
                let stream = tokio::net::TcpStream::connect(addr)
                    .await
                    .with_context(|| format!("connecting to {addr}"))?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(connection);
                Ok(Link::Raw { addr, sender })
            }
            Carrier::Rpc(client) => Ok(Link::Rpc(client)),
        }
    }

    /// One request on a connection of its own.
    async fn send(&self, request: &TransferRequest) -> Result<Vec<u8>> {
        self.link().await?.send(request).await
    }
}

impl Link<'_> {
    async fn send(&mut self, request: &TransferRequest) -> Result<Vec<u8>> {
        match self {
            Link::Raw { addr, sender } => {
                let http = hyper::Request::post(TRANSFER_PATH)
                    .header(hyper::header::HOST, *addr)
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
                Ok(body.to_vec())
            }
            Link::Rpc(client) => {
                let hex = client
                    .replication_transfer(format!("0x{}", hex::encode(request.encode())))
                    .await
                    .doing("reading the checkpoint from the node (replication_transfer)")?;
                hex::decode(hex.strip_prefix("0x").unwrap_or(&hex))
                    .context("the node's transfer response is not hex")
            }
        }
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
