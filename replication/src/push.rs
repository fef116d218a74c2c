//! The active node's push of a new checkpoint: its manifest and the objects that are new in it,
//! sent to the service's candidates as soon as it is taken. A standby that holds the previous
//! checkpoint then has everything and applies it without a request round trip. A push is
//! bounded ([`MAX_PUSH_BYTES`]); a larger checkpoint is announced and fetched instead, and
//! whatever a push lacks is fetched as usual.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use drchain_support::{ServiceName, H256};
use parity_scale_codec::{Decode, DecodeLimit, Encode};

use crate::compress::{decode_chunk, encode_chunk, raw_bytes, Dictionary};
use crate::error::ReplicationError;
use crate::manifest::{EncodedManifest, Manifest};
use crate::snapshot::Unwritten;
use crate::store::ChunkStore;

/// Largest push, encoded. Sized for the checkpoints that matter for latency (a few changed
/// chunks and the manifest of a service of some tens of MiB) while keeping what a member can
/// make another buffer small.
pub const MAX_PUSH_BYTES: usize = 256 * 1024;
/// Plain bytes of a push's chunks kept in memory at most. Chunks compress, so a push within
/// `MAX_PUSH_BYTES` can decode to far more (a member could craft one that decodes to hundreds
/// of MiB): beyond this each chunk is verified and dropped, and the push is applied from the
/// store like a fetched checkpoint.
pub const MAX_PUSH_PLAIN_BYTES: usize = 8 * 1024 * 1024;

/// Checkpoint `sequence` of `service`, pushed by the node that took it.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct CheckpointPush {
    /// The service.
    pub service: ServiceName,
    /// The sequence it is submitting the checkpoint under.
    pub sequence: u64,
    /// Its manifest root.
    pub root: H256,
    /// The manifest's canonical bytes.
    pub manifest: Vec<u8>,
    /// Objects new in this checkpoint (its dictionary first, if new), encoded as stored.
    pub objects: Vec<(H256, Vec<u8>)>,
}

/// Why a received push was not kept.
#[derive(Debug, thiserror::Error)]
pub enum PushRejected {
    /// The sender sent bytes that do not match their names or the manifest.
    #[error("bad push: {reason}")]
    Bad {
        /// What was wrong.
        reason: String,
    },
    /// This node could not store it (its disk).
    #[error("cannot store a push: {0}")]
    Local(ReplicationError),
}

impl CheckpointPush {
    /// The push of `manifest` (checkpoint `sequence` of `service`, in `store`) carrying the
    /// objects the previous checkpoint did not use; `None` when it would exceed
    /// [`MAX_PUSH_BYTES`]. `previous` gives that checkpoint's manifest; it is read only when
    /// this one is small enough to push.
    pub fn build(
        store: &ChunkStore,
        service: ServiceName,
        sequence: u64,
        manifest: &Manifest,
        previous: impl FnOnce() -> Option<Arc<Manifest>>,
    ) -> Result<Option<Self>, ReplicationError> {
        Self::build_with(
            store,
            &Unwritten::default(),
            service,
            sequence,
            manifest,
            &manifest.encoded(),
            previous,
        )
    }

    /// [`CheckpointPush::build`] for a checkpoint whose new objects may not be written yet
    /// (those `unwritten` holds are taken from there), its manifest encoded already
    /// (`encoded`: the active encoded it once, for its root).
    pub fn build_with(
        store: &ChunkStore,
        unwritten: &Unwritten,
        service: ServiceName,
        sequence: u64,
        manifest: &Manifest,
        encoded: &EncodedManifest,
        previous: impl FnOnce() -> Option<Arc<Manifest>>,
    ) -> Result<Option<Self>, ReplicationError> {
        let mut size = encoded.bytes.len() + 128;
        if size > MAX_PUSH_BYTES {
            return Ok(None);
        }
        let mut objects = vec![];
        for id in manifest.new_since(previous().as_deref()) {
            let object = match unwritten.object(&id) {
                Some(held) => held.to_vec(),
                None => store.get_encoded(&id)?,
            };
            size += object.len() + 40;
            if size > MAX_PUSH_BYTES {
                return Ok(None);
            }
            objects.push((id, object));
        }
        Ok(Some(Self {
            service,
            sequence,
            root: encoded.root,
            manifest: encoded.bytes.clone(),
            objects,
        }))
    }

    /// Decodes a push from a peer, refusing oversized ones.
    pub fn decode_bounded(bytes: &[u8]) -> Result<Self, ReplicationError> {
        let bad = |reason: String| ReplicationError::BadMessage {
            reason: format!("checkpoint push: {reason}"),
        };
        if bytes.len() > MAX_PUSH_BYTES {
            return Err(bad(format!(
                "{} bytes, more than {MAX_PUSH_BYTES}",
                bytes.len()
            )));
        }
        let mut input = bytes;
        let push = Self::decode_with_depth_limit(8, &mut input).map_err(|e| bad(e.to_string()))?;
        if !input.is_empty() {
            return Err(bad(format!("{} trailing bytes", input.len())));
        }
        Ok(push)
    }

    /// Verifies the push against `store` and keeps it: [`CheckpointPush::verify`], then
    /// [`VerifiedPush::store`].
    pub fn store(&self, store: &ChunkStore) -> Result<(), PushRejected> {
        let (manifest, _) = self.check(store)?;
        write_objects(self, &manifest, store).map_err(PushRejected::Local)
    }

    /// Checks the manifest against the root and every object against its name (decoding it,
    /// with the checkpoint's dictionary from the push or `store`); each object must be the
    /// manifest's dictionary or one of its chunks (a push cannot fill the store with anything
    /// else). Writes nothing: a standby can apply what it verified before storing it.
    pub fn verify(self, store: &ChunkStore) -> Result<VerifiedPush, PushRejected> {
        let (manifest, chunks) = self.check(store)?;
        Ok(VerifiedPush {
            push: self,
            manifest: Arc::new(manifest),
            chunks,
            stored: AtomicBool::new(false),
        })
    }

    /// The manifest, and the chunks' plain bytes if they fit in `MAX_PUSH_PLAIN_BYTES` (else
    /// `None`: every chunk was verified all the same).
    fn check(&self, store: &ChunkStore) -> Result<(Manifest, Option<PlainChunks>), PushRejected> {
        let bad = |reason: String| PushRejected::Bad { reason };
        let manifest = match Manifest::decode_verified(&self.manifest, &self.root) {
            Ok(m) => m,
            Err(e) => return Err(bad(format!("manifest: {e}"))),
        };
        // Each object must be the dictionary or one of the manifest's chunks: the objects are
        // few and the chunks many, so the chunks are passed over once, not gathered in a set.
        let mut unmatched: HashSet<H256> = self
            .objects
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| manifest.dictionary != Some(*id))
            .collect();
        for chunk in manifest.files.iter().flat_map(|f| &f.chunks) {
            if unmatched.is_empty() {
                break;
            }
            unmatched.remove(&chunk.id);
        }
        if let Some(id) = unmatched.iter().next() {
            return Err(bad(format!(
                "object {id} is not part of checkpoint {}",
                self.root
            )));
        }
        let mut dictionary = None;
        if let Some(id) = manifest.dictionary {
            let pushed = self.objects.iter().find(|(o, _)| *o == id);
            dictionary = Some(match pushed {
                Some((_, encoded)) => Arc::new(Dictionary::new(
                    decode_chunk(&id, encoded, None).map_err(|e| bad(e.to_string()))?,
                )),
                None => store.dictionary(&id).map_err(PushRejected::Local)?,
            });
        }
        let mut chunks = Some(HashMap::with_capacity(self.objects.len()));
        let mut plain_bytes = 0usize;
        for (id, encoded) in &self.objects {
            if manifest.dictionary == Some(*id) {
                continue;
            }
            let plain = decode_chunk(id, encoded, dictionary.as_deref()).map_err(|e| match e {
                e @ ReplicationError::BadChunk { .. } => bad(e.to_string()),
                other => PushRejected::Local(other),
            })?;
            plain_bytes += plain.len();
            if plain_bytes > MAX_PUSH_PLAIN_BYTES {
                chunks = None;
            }
            if let Some(chunks) = &mut chunks {
                chunks.insert(*id, plain);
            }
        }
        Ok((manifest, chunks))
    }
}

/// Chunks' plain bytes by name.
pub type PlainChunks = HashMap<H256, Vec<u8>>;

/// A pushed checkpoint whose manifest and objects are verified, their plain bytes at hand.
#[derive(Debug)]
pub struct VerifiedPush {
    /// The push as received (its objects encoded, as stored).
    pub push: CheckpointPush,
    /// Its manifest (shared: the standby applies from it while the node stores it).
    pub manifest: Arc<Manifest>,
    /// The plain bytes of the chunks it carries, by name; `None` when they exceed
    /// [`MAX_PUSH_PLAIN_BYTES`] (apply it from the store once stored).
    pub chunks: Option<PlainChunks>,
    /// Whether [`VerifiedPush::store`] completed (by whoever came first: the node or the
    /// agent that applied it).
    stored: AtomicBool,
}

impl VerifiedPush {
    /// Writes its objects and manifest into `store` (what is there already is skipped); once
    /// that succeeded, it does nothing.
    pub fn store(&self, store: &ChunkStore) -> Result<(), ReplicationError> {
        if self.is_stored() {
            return Ok(());
        }
        write_objects(&self.push, &self.manifest, store)?;
        self.stored.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether it was stored.
    pub fn is_stored(&self) -> bool {
        self.stored.load(Ordering::Acquire)
    }
}

/// Writes a verified push's objects (the dictionary first) and then its manifest.
fn write_objects(
    push: &CheckpointPush,
    manifest: &Manifest,
    store: &ChunkStore,
) -> Result<(), ReplicationError> {
    let dictionary_first = push
        .objects
        .iter()
        .filter(|(id, _)| manifest.dictionary == Some(*id))
        .chain(
            push.objects
                .iter()
                .filter(|(id, _)| manifest.dictionary != Some(*id)),
        );
    let mut dictionary = None;
    for (id, encoded) in dictionary_first {
        let unencoded = raw_bytes(encoded).filter(|_| manifest.dictionary != Some(*id));
        match unencoded {
            // A small push travels unencoded (the active compresses only after pushing): the
            // store keeps chunks compressed, as members fetch them from it.
            Some(plain) if !store.contains(id) => {
                if let (None, Some(d)) = (&dictionary, manifest.dictionary) {
                    dictionary = Some(store.dictionary(&d)?);
                }
                let compressed = encode_chunk(plain, dictionary.as_deref(), &store.stats)?;
                store.put_verified(id, &compressed)?;
            }
            _ => store.put_verified(id, encoded)?,
        }
    }
    // The bytes as pushed: checked against the root when the push was verified.
    store.put_encoded_manifest(&push.root, &push.manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunk::ChunkingParams;
    use crate::compress::needed_dictionary;
    use crate::manifest::missing;
    use crate::snapshot::{snapshot_dir, snapshot_dir_deferred, FileCache};
    use crate::testdata::{database_pages, pseudo_random};

    fn service() -> ServiceName {
        ServiceName::new("db").unwrap()
    }

    /// An active and a standby store, and the push of a first checkpoint of one file `f`.
    struct FirstPush {
        dir: tempfile::TempDir,
        active: ChunkStore,
        standby: ChunkStore,
        manifest: Manifest,
        push: CheckpointPush,
    }

    fn first_push(data: &[u8]) -> FirstPush {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir(&source).unwrap();
        std::fs::write(source.join("f"), data).unwrap();
        let active = ChunkStore::open(dir.path().join("active")).unwrap();
        let standby = ChunkStore::open(dir.path().join("standby")).unwrap();
        let (manifest, _) =
            snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
        let push = CheckpointPush::build(&active, service(), 1, &manifest, || None)
            .unwrap()
            .expect("small enough to push");
        FirstPush {
            dir,
            active,
            standby,
            manifest,
            push,
        }
    }

    #[test]
    fn a_push_carries_what_is_new_and_completes_a_standby_that_held_the_previous_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("source");
        std::fs::create_dir(&source).unwrap();
        std::fs::write(source.join("big"), pseudo_random(200_000, 1)).unwrap();
        let active = ChunkStore::open(dir.path().join("active")).unwrap();
        let standby = ChunkStore::open(dir.path().join("standby")).unwrap();
        let (first, _) = snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
        let push = CheckpointPush::build(&active, service(), 1, &first, || None)
            .unwrap()
            .expect("fits");
        push.store(&standby).unwrap();
        assert!(missing(&first, |id| standby.contains(id)).is_empty());

        std::fs::write(source.join("small"), b"a 4 KiB write, or so").unwrap();
        let (second, _) = snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
        let push = CheckpointPush::build(&active, service(), 2, &second, || {
            Some(Arc::new(first.clone()))
        })
        .unwrap()
        .expect("fits");
        assert_eq!(push.objects.len(), 1, "only the new chunk travels");
        let decoded = CheckpointPush::decode_bounded(&push.encode()).unwrap();
        decoded.store(&standby).unwrap();
        assert_eq!(standby.manifest(&second.root()).unwrap(), second);
        assert!(missing(&second, |id| standby.contains(id)).is_empty());
    }

    /// A small change travels unencoded — the active compresses it only after pushing it, off
    /// the path to the standbys — and both stores keep it compressed (with the dictionary,
    /// when the service has one), as members fetch it from there.
    #[test]
    fn a_small_change_is_pushed_unencoded_and_stored_compressed_on_both_sides() {
        let trained = Dictionary::train(&database_pages(2000, 1)).expect("enough samples");
        for dictionary in [None, Some(&trained)] {
            let dir = tempfile::tempdir().unwrap();
            let source = dir.path().join("source");
            std::fs::create_dir(&source).unwrap();
            let page = database_pages(1, 2).remove(0);
            std::fs::write(source.join("page"), &page).unwrap();
            let active = ChunkStore::open(dir.path().join("active")).unwrap();
            let standby = ChunkStore::open(dir.path().join("standby")).unwrap();
            let (manifest, _, unwritten) = snapshot_dir_deferred(
                &source,
                &active,
                ChunkingParams::default(),
                dictionary,
                &mut FileCache::default(),
                MAX_PUSH_BYTES,
                None,
            )
            .unwrap();
            let encoded = manifest.encoded();
            let push = CheckpointPush::build_with(
                &active,
                &unwritten,
                service(),
                1,
                &manifest,
                &encoded,
                || None,
            )
            .unwrap()
            .expect("fits");
            let id = manifest.files[0].chunks[0].id;
            let pushed = push.objects.iter().find(|(o, _)| *o == id).unwrap();
            assert_eq!(
                raw_bytes(&pushed.1),
                Some(page.as_slice()),
                "pushed unencoded"
            );
            unwritten.write(&active, &encoded).unwrap();

            let received = CheckpointPush::decode_bounded(&push.encode()).unwrap();
            let verified = received.verify(&standby).unwrap();
            assert_eq!(verified.chunks.as_ref().unwrap()[&id], page);
            verified.store(&standby).unwrap();
            for store in [&active, &standby] {
                let stored = store.get_encoded(&id).unwrap();
                assert!(raw_bytes(&stored).is_none(), "stored compressed");
                assert_eq!(needed_dictionary(&stored), dictionary.map(Dictionary::id));
                assert_eq!(store.get(&id).unwrap(), page);
            }
        }
    }

    /// A standby applies a push from memory before storing it: what `verify` gives must be
    /// exactly the checkpoint's new chunks, and nothing is written until `store`.
    #[test]
    fn a_verified_push_gives_its_plain_chunks_and_writes_nothing_until_stored() {
        let data = pseudo_random(60_000, 4);
        // `dir` bound: left to `..`, it would be dropped (removed) at once.
        let FirstPush {
            dir: _dir,
            standby,
            manifest,
            push,
            ..
        } = first_push(&data);
        let verified = push.verify(&standby).unwrap();
        assert_eq!(*verified.manifest, manifest);
        let rebuilt: Vec<u8> = manifest.files[0]
            .chunks
            .iter()
            .flat_map(|c| verified.chunks.as_ref().unwrap()[&c.id].clone())
            .collect();
        assert_eq!(rebuilt, data);
        assert!(standby.manifest(&manifest.root()).is_err());
        assert!(manifest.chunk_ids().iter().all(|id| !standby.contains(id)));
        verified.store(&standby).unwrap();
        assert_eq!(standby.manifest(&manifest.root()).unwrap(), manifest);
        assert!(missing(&manifest, |id| standby.contains(id)).is_empty());
    }

    /// A small push of very compressible chunks decodes to far more than it weighs: beyond
    /// `MAX_PUSH_PLAIN_BYTES` its chunks are verified but not kept in memory.
    #[test]
    fn a_push_that_decodes_to_too_much_is_verified_without_keeping_its_chunks() {
        let runs: Vec<u8> = (0..200u32).flat_map(|i| vec![i as u8; 64 * 1024]).collect();
        // `dir` bound: left to `..`, it would be dropped (removed) at once.
        let FirstPush {
            dir: _dir,
            standby,
            manifest,
            push,
            ..
        } = first_push(&runs);
        assert!(runs.len() > MAX_PUSH_PLAIN_BYTES);
        let verified = push.verify(&standby).unwrap();
        assert!(verified.chunks.is_none());
        verified.store(&standby).unwrap();
        assert!(missing(&manifest, |id| standby.contains(id)).is_empty());
    }

    #[test]
    fn a_bad_or_foreign_object_or_manifest_is_refused_and_a_large_checkpoint_is_not_pushed() {
        let FirstPush {
            dir,
            active,
            standby,
            manifest,
            push: good,
        } = first_push(&pseudo_random(50_000, 2));
        let source = dir.path().join("source");

        let mut corrupt = good.clone();
        if let Some(byte) = corrupt.objects[0].1.last_mut() {
            *byte ^= 1;
        }
        let mut foreign = good.clone();
        let (id, _) = active.put(b"not in the checkpoint", None).unwrap();
        foreign.objects.push((id, active.get_encoded(&id).unwrap()));
        let mut wrong_root = good.clone();
        wrong_root.root = H256([7; 32]);
        for push in [corrupt, foreign, wrong_root] {
            assert!(matches!(
                push.store(&standby),
                Err(PushRejected::Bad { .. })
            ));
            assert!(matches!(
                push.verify(&standby),
                Err(PushRejected::Bad { .. })
            ));
        }
        assert!(!standby.contains(&id));

        let oversized = vec![0u8; MAX_PUSH_BYTES + 1];
        assert!(CheckpointPush::decode_bounded(&oversized).is_err());
        std::fs::write(source.join("big"), pseudo_random(2 * MAX_PUSH_BYTES, 3)).unwrap();
        let (big, _) = snapshot_dir(&source, &active, ChunkingParams::default(), None).unwrap();
        assert!(
            CheckpointPush::build(&active, service(), 2, &big, || Some(Arc::new(
                manifest.clone()
            )))
            .unwrap()
            .is_none()
        );
    }
}
