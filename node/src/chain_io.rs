//! The chain's own backups: `drchain export-state` / `import-state` and `export-blocks` /
//! `import-blocks`, on the database of a stopped node.
//!
//! A state export is the head block, its commit certificate, the validator-set change proofs
//! since genesis and every state entry: importing it checks all of it as state sync does
//! (certificate against the validator set followed from genesis, entries against the state
//! root), so a damaged or forged file is refused and the database is left as it was. A block
//! export carries blocks with their certificates; importing checks each certificate against
//! the validator set of the state it extends and executes the block, as block sync does.

use std::io::{Read, Write};
use std::path::Path;

use anyhow::{bail, Context, Result};
use drchain_consensus::codec::{decode_bounded, WireCertificate};
use drchain_consensus::state_sync::target::{verify_certificate, verify_target};
use drchain_consensus::state_sync::{SyncTarget, TrustRoot};
use drchain_consensus::store::kv::KeyValueDb;
use drchain_consensus::store::ChainStore;
use drchain_runtime::{check_body, execute_block, pallet_membership, Block, Genesis};
use drchain_support::{Overlay, StateRead, H256};
use parity_scale_codec::{Decode, Encode};

use crate::cli::{ChainIoArgs, ExportBlocksArgs};
use crate::rocks::RocksDb;

/// Leads a state export.
const STATE_MAGIC: &[u8; 16] = b"drchain-state-v1";
/// Leads a block export.
const BLOCKS_MAGIC: &[u8; 16] = b"drchain-blocks-1";
/// The largest state export read (the state of a control plane is small).
const MAX_STATE_FILE: usize = 1 << 30;
/// The largest block record read (a block's extrinsics take at most 2 MiB).
const MAX_BLOCK_RECORD: usize = 16 << 20;

#[derive(Debug, Encode, Decode)]
struct StateExport {
    genesis: H256,
    target: SyncTarget,
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What a node starting from `genesis` trusts.
pub fn trust_root(genesis: &Genesis) -> TrustRoot {
    TrustRoot {
        genesis_hash: genesis.hash(),
        genesis: genesis.header.clone(),
        validators: pallet_membership::validators(&Overlay::new(&genesis.state as &dyn StateRead)),
    }
}

/// Writes the head's state to `out`; returns the head's number.
pub fn export_state<D: KeyValueDb>(store: &ChainStore<D>, out: &mut dyn Write) -> Result<u64> {
    let number = store.head().number;
    if number == 0 {
        bail!("the chain has no block beyond genesis: nothing to export");
    }
    let block = store.block(number)?.context("the head block is missing")?;
    let certificate = store
        .certificate(number)?
        .context("the head's certificate is missing")?;
    let export = StateExport {
        genesis: store.genesis_hash(),
        target: SyncTarget {
            block,
            certificate,
            set_changes: store.reader().set_changes(number)?,
        },
        entries: store.state().scan_prefix(b""),
    };
    out.write_all(STATE_MAGIC)?;
    out.write_all(&export.encode())?;
    out.flush()?;
    Ok(number)
}

/// Checks a state export and makes it the store's state and head; returns its block number.
pub fn import_state<D: KeyValueDb>(
    store: &mut ChainStore<D>,
    genesis: &Genesis,
    bytes: &[u8],
) -> Result<u64> {
    let body = bytes
        .strip_prefix(STATE_MAGIC.as_slice())
        .context("not a drchain state export")?;
    let export: StateExport =
        decode_bounded(body, MAX_STATE_FILE, "state export").context("a damaged state export")?;
    if export.genesis != genesis.hash() {
        bail!(
            "the export is of chain {}, this is {}",
            export.genesis,
            genesis.hash()
        );
    }
    verify_target(&trust_root(genesis), &export.target)
        .context("the export's block does not check")?;
    let number = export.target.block.header.number;
    store
        .install_state(&export.target, export.entries)
        .context("the export's state does not check")?;
    Ok(number)
}

/// Writes blocks `from..=to` with their certificates to `out`; returns how many.
pub fn export_blocks<D: KeyValueDb>(
    store: &ChainStore<D>,
    from: u64,
    to: u64,
    out: &mut dyn Write,
) -> Result<u64> {
    let oldest = store.reader().base_number()?.max(1);
    if from < oldest {
        bail!(
            "block #{from} is not kept here (the oldest is #{oldest}): export from an archive node"
        );
    }
    out.write_all(BLOCKS_MAGIC)?;
    out.write_all(&store.genesis_hash().0)?;
    let mut count = 0;
    for n in from..=to.min(store.head().number) {
        let block = store
            .block(n)?
            .with_context(|| format!("block #{n} is missing"))?;
        let certificate = store
            .certificate(n)?
            .with_context(|| format!("the certificate of #{n} is missing"))?;
        let record = (block, certificate).encode();
        out.write_all(&u32::try_from(record.len())?.to_be_bytes())?;
        out.write_all(&record)?;
        count += 1;
    }
    out.flush()?;
    Ok(count)
}

/// Imports the blocks of an export that extend the store's head, each checked and executed;
/// returns how many were imported (blocks at or below the head are skipped).
pub fn import_blocks<D: KeyValueDb>(
    store: &mut ChainStore<D>,
    genesis: &Genesis,
    input: &mut dyn Read,
) -> Result<u64> {
    let mut magic = [0u8; 16];
    input
        .read_exact(&mut magic)
        .context("not a drchain block export")?;
    let mut chain = [0u8; 32];
    input
        .read_exact(&mut chain)
        .context("not a drchain block export")?;
    if &magic != BLOCKS_MAGIC {
        bail!("not a drchain block export");
    }
    if H256(chain) != genesis.hash() {
        bail!(
            "the export is of chain {}, this is {}",
            H256(chain),
            genesis.hash()
        );
    }
    let root = trust_root(genesis);
    let mut imported = 0;
    loop {
        let mut len = [0u8; 4];
        match input.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(e.into()),
        }
        let len = u32::from_be_bytes(len) as usize;
        if len > MAX_BLOCK_RECORD {
            bail!("a block record of {len} bytes (at most {MAX_BLOCK_RECORD})");
        }
        let mut record = vec![0; len];
        input
            .read_exact(&mut record)
            .context("the export ends inside a block")?;
        let (block, certificate): (Block, WireCertificate) =
            decode_bounded(&record, MAX_BLOCK_RECORD, "block record")
                .context("a damaged block record")?;
        let number = block.header.number;
        let head = store.head().clone();
        if number <= head.number {
            continue;
        }
        if number != head.number + 1 {
            bail!("block #{number} does not follow the head #{}", head.number);
        }
        let validators = pallet_membership::validators_at(&Overlay::new(&store.state()), number);
        verify_certificate(&root, &block.header, &certificate, &validators)
            .with_context(|| format!("block #{number}"))?;
        check_body(&block).with_context(|| format!("block #{number}'s body"))?;
        let executed = execute_block(&store.state(), &head, &block, &genesis.hash())
            .with_context(|| format!("block #{number} does not execute"))?;
        store.import(&block, executed, &certificate)?;
        imported += 1;
    }
    Ok(imported)
}

fn open(args: &ChainIoArgs) -> Result<(ChainStore<RocksDb>, Genesis)> {
    let spec = crate::chain_spec::load(&args.chain)?;
    let genesis = spec.build_genesis().map_err(|e| anyhow::anyhow!("{e}"))?;
    let base = args
        .base_path
        .clone()
        .unwrap_or_else(crate::run::default_base_path);
    let path = crate::run::database_path(&base, &spec);
    std::fs::create_dir_all(&path)?;
    let db = RocksDb::open(&path)
        .with_context(|| format!("opening {} (stop the node using it first)", path.display()))?;
    Ok((ChainStore::open(db, &genesis)?, genesis))
}

fn create(path: &Path) -> Result<std::io::BufWriter<std::fs::File>> {
    let file =
        std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?;
    Ok(std::io::BufWriter::new(file))
}

/// `drchain export-state FILE`
pub fn export_state_command(args: ChainIoArgs) -> Result<()> {
    let (store, _) = open(&args)?;
    let number = export_state(&store, &mut create(&args.file)?)?;
    println!(
        "exported the state of block #{number} to {}",
        args.file.display()
    );
    Ok(())
}

/// `drchain import-state FILE`
pub fn import_state_command(args: ChainIoArgs) -> Result<()> {
    let bytes =
        std::fs::read(&args.file).with_context(|| format!("reading {}", args.file.display()))?;
    let (mut store, genesis) = open(&args)?;
    let number = import_state(&mut store, &genesis, &bytes)?;
    println!("imported the state of block #{number}; the node follows the chain from there");
    Ok(())
}

/// `drchain export-blocks FILE`
pub fn export_blocks_command(args: ExportBlocksArgs) -> Result<()> {
    let (store, _) = open(&args.io)?;
    let to = args.to.unwrap_or(u64::MAX);
    let count = export_blocks(&store, args.from, to, &mut create(&args.io.file)?)?;
    println!("exported {count} blocks to {}", args.io.file.display());
    Ok(())
}

/// `drchain import-blocks FILE`
pub fn import_blocks_command(args: ChainIoArgs) -> Result<()> {
    let file = std::fs::File::open(&args.file)
        .with_context(|| format!("opening {}", args.file.display()))?;
    let (mut store, genesis) = open(&args)?;
    let count = import_blocks(&mut store, &genesis, &mut std::io::BufReader::new(file))?;
    println!(
        "imported {count} blocks; the head is #{}",
        store.head().number
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use drchain_consensus::store::kv::MemoryDb;
    use drchain_consensus::testing::import_signed;
    use drchain_runtime::dev::specs;
    use drchain_support::Backend;

    use super::*;

    const FOUR: &[&str] = &["alice", "bob", "charlie", "dave"];

    fn chain(blocks: u64) -> (Genesis, ChainStore<MemoryDb>) {
        let g = specs::local().unwrap().build_genesis().unwrap();
        let mut store = ChainStore::open(MemoryDb::new(), &g).unwrap();
        for _ in 0..blocks {
            import_signed(&mut store, &g, vec![], FOUR);
        }
        (g, store)
    }

    #[test]
    fn an_exported_state_imports_into_an_empty_node_which_then_follows_the_chain() {
        let (g, mut store) = chain(30);
        let mut file = vec![];
        assert_eq!(export_state(&store, &mut file).unwrap(), 30);

        let mut fresh = ChainStore::open(MemoryDb::new(), &g).unwrap();
        assert_eq!(import_state(&mut fresh, &g, &file).unwrap(), 30);
        assert_eq!(fresh.head(), store.head());
        assert_eq!(fresh.state().root(), store.head().state_root);
        import_signed(&mut store, &g, vec![], FOUR);
        let mut blocks = vec![];
        export_blocks(&store, 31, 31, &mut blocks).unwrap();
        assert_eq!(
            import_blocks(&mut fresh, &g, &mut blocks.as_slice()).unwrap(),
            1
        );
        assert_eq!(fresh.head().hash(), store.head().hash());
    }

    #[test]
    fn a_damaged_state_export_is_refused_and_changes_nothing() {
        let (g, store) = chain(30);
        let mut file = vec![];
        export_state(&store, &mut file).unwrap();
        for damage in [file.len() - 1, file.len() / 2, 20] {
            let mut bad = file.clone();
            bad[damage] ^= 0x01;
            let mut fresh = ChainStore::open(MemoryDb::new(), &g).unwrap();
            assert!(import_state(&mut fresh, &g, &bad).is_err(), "byte {damage}");
            assert_eq!(fresh.head().number, 0);
        }
        let other = specs::dev().unwrap().build_genesis().unwrap();
        let mut fresh = ChainStore::open(MemoryDb::new(), &other).unwrap();
        assert!(
            import_state(&mut fresh, &other, &file).is_err(),
            "another chain's export"
        );
    }

    #[test]
    fn exported_blocks_replay_into_another_node_and_a_forged_certificate_stops_the_import() {
        let (g, store) = chain(40);
        let mut file = vec![];
        assert_eq!(export_blocks(&store, 1, 40, &mut file).unwrap(), 40);
        let mut fresh = ChainStore::open(MemoryDb::new(), &g).unwrap();
        assert_eq!(
            import_blocks(&mut fresh, &g, &mut file.as_slice()).unwrap(),
            40
        );
        assert_eq!(fresh.head().hash(), store.head().hash());
        // Again: nothing new.
        assert_eq!(
            import_blocks(&mut fresh, &g, &mut file.as_slice()).unwrap(),
            0
        );

        // Block 21 certified by two validators only: 20 blocks go in, then the import stops.
        let mut forged = vec![];
        export_blocks(&store, 1, 20, &mut forged).unwrap();
        let block = store.block(21).unwrap().unwrap();
        let mut certificate = store.certificate(21).unwrap().unwrap();
        certificate.signatures.truncate(2);
        let record = (block, certificate).encode();
        forged.extend_from_slice(&u32::try_from(record.len()).unwrap().to_be_bytes());
        forged.extend_from_slice(&record);
        let mut fresh = ChainStore::open(MemoryDb::new(), &g).unwrap();
        let err = import_blocks(&mut fresh, &g, &mut forged.as_slice()).unwrap_err();
        assert!(format!("{err:#}").contains("#21"), "{err:#}");
        assert_eq!(fresh.head().number, 20);
    }
}
