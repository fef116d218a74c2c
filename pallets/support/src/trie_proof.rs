//! Verifiable pieces of the state trie ([`crate::trie`]): subtree summaries, which let a
//! joining node download a state one subtree at a time and check each piece against the state
//! root of a header it trusts, and read proofs of one key's value.
//!
//! A subtree's hash alone does not say how its parent combines it (one leaf is carried up
//! as is, two or more are hashed together), so a summary carries the leaf count class too.
//! Both are checked: a summary is trusted only when it combines with its sibling into a
//! trusted parent, and the entries of a subtree only when they give its trusted summary.

use parity_scale_codec::{Decode, Encode};

use crate::primitives::H256;
use crate::trie::{bit, key_path, leaf_hash, node_hash, span, with_bit, Path, TrieStore, EMPTY};

/// The deepest subtree: a single path.
pub const MAX_DEPTH: u16 = 256;

/// How many leaves a subtree holds, as far as its hash depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub enum LeafCount {
    /// None: the subtree hashes to zero.
    #[codec(index = 0)]
    Empty,
    /// One: the subtree hashes to that leaf.
    #[codec(index = 1)]
    One,
    /// Two or more: the subtree hashes its two halves together.
    #[codec(index = 2)]
    Many,
}

/// A subtree's hash and leaf count class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Encode, Decode)]
pub struct SubtreeSummary {
    pub hash: H256,
    pub leaves: LeafCount,
}

impl SubtreeSummary {
    /// The summary of a subtree with no leaf.
    pub const EMPTY: Self = Self {
        hash: EMPTY,
        leaves: LeafCount::Empty,
    };

    /// Whether the hash fits the class: zero exactly when empty.
    pub fn is_well_formed(&self) -> bool {
        (self.leaves == LeafCount::Empty) == (self.hash == EMPTY)
    }

    /// The summary of the parent of two sibling subtrees.
    pub fn combine(left: &Self, right: &Self) -> Self {
        match (left.leaves, right.leaves) {
            (LeafCount::Empty, _) if right.leaves != LeafCount::Many => *right,
            (_, LeafCount::Empty) if left.leaves != LeafCount::Many => *left,
            _ => Self {
                hash: node_hash(&left.hash, &right.hash),
                leaves: LeafCount::Many,
            },
        }
    }

    /// The summary of the subtree at `depth` holding exactly `leaves` (sorted by path,
    /// distinct, all inside that subtree).
    pub fn of_leaves(depth: usize, leaves: &[(Path, H256)]) -> Self {
        match leaves {
            [] => Self::EMPTY,
            [(_, h)] => Self {
                hash: *h,
                leaves: LeafCount::One,
            },
            _ => {
                let split = leaves.partition_point(|(p, _)| !bit(p, depth));
                Self::combine(
                    &Self::of_leaves(depth + 1, &leaves[..split]),
                    &Self::of_leaves(depth + 1, &leaves[split..]),
                )
            }
        }
    }
}

/// A subtree's place in the trie: the paths that start with the first `depth` bits of
/// `prefix`. The bits of `prefix` from `depth` on are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Encode, Decode)]
pub struct SubtreeId {
    pub depth: u16,
    pub prefix: Path,
}

impl SubtreeId {
    /// The whole trie.
    pub const ROOT: Self = Self {
        depth: 0,
        prefix: [0; 32],
    };

    /// Whether this names a subtree: depth at most [`MAX_DEPTH`], no prefix bit beyond it.
    pub fn is_valid(&self) -> bool {
        self.depth <= MAX_DEPTH && (usize::from(self.depth)..256).all(|d| !bit(&self.prefix, d))
    }

    /// The paths of this subtree.
    pub fn span(&self) -> std::ops::RangeInclusive<Path> {
        span(usize::from(self.depth.min(MAX_DEPTH)), &self.prefix)
    }

    /// Whether `path` lies in this subtree.
    pub fn contains(&self, path: &Path) -> bool {
        self.span().contains(path)
    }

    /// The two halves, unless this is a single path.
    pub fn children(&self) -> Option<(Self, Self)> {
        (self.depth < MAX_DEPTH).then(|| {
            let depth = self.depth + 1;
            (
                Self {
                    depth,
                    prefix: self.prefix,
                },
                Self {
                    depth,
                    prefix: with_bit(self.prefix, usize::from(self.depth)),
                },
            )
        })
    }
}

/// Why a subtree's entries were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubtreeError {
    /// A key's path lies outside the subtree.
    #[error("key {key} lies outside the subtree")]
    Outside {
        /// The key, hex.
        key: String,
    },
    /// The same key twice.
    #[error("key {key} appears twice")]
    Duplicate {
        /// The key, hex.
        key: String,
    },
    /// The entries do not give the expected summary.
    #[error("the entries hash to {found}, not {expected}")]
    Mismatch { expected: H256, found: H256 },
}

/// The summary of subtree `id` if it holds exactly `entries` (each key inside it, once).
pub fn summarize_entries(
    id: &SubtreeId,
    entries: &[(Vec<u8>, Vec<u8>)],
) -> Result<SubtreeSummary, SubtreeError> {
    let mut leaves = Vec::with_capacity(entries.len());
    for (key, value) in entries {
        let path = key_path(key);
        if !id.contains(&path) {
            return Err(SubtreeError::Outside {
                key: hex::encode(key),
            });
        }
        leaves.push((path, leaf_hash(&path, value)));
    }
    leaves.sort_unstable_by_key(|l| l.0);
    if let Some(w) = leaves.windows(2).find(|w| w[0].0 == w[1].0) {
        let key = entries
            .iter()
            .find(|(k, _)| key_path(k) == w[0].0)
            .map_or_else(String::new, |(k, _)| hex::encode(k));
        return Err(SubtreeError::Duplicate { key });
    }
    Ok(SubtreeSummary::of_leaves(usize::from(id.depth), &leaves))
}

/// Checks that `entries` are exactly the subtree `id` whose trusted summary is `expected`.
pub fn check_entries(
    id: &SubtreeId,
    entries: &[(Vec<u8>, Vec<u8>)],
    expected: &SubtreeSummary,
) -> Result<(), SubtreeError> {
    let found = summarize_entries(id, entries)?;
    if found != *expected {
        return Err(SubtreeError::Mismatch {
            expected: expected.hash,
            found: found.hash,
        });
    }
    Ok(())
}

/// The summary of subtree `id` of the trie in `store`.
pub fn summary(store: &dyn TrieStore, id: &SubtreeId) -> SubtreeSummary {
    let depth = usize::from(id.depth);
    let first: Vec<(Path, H256)> = store.leaves(span(depth, &id.prefix)).take(2).collect();
    match first.as_slice() {
        [] => SubtreeSummary::EMPTY,
        [(_, h)] => SubtreeSummary {
            hash: *h,
            leaves: LeafCount::One,
        },
        _ => {
            // Two leaves or more: depth < 256, and the node is cached in a consistent trie.
            let hash = match store.node(&(depth as u8, id.prefix)) {
                Some(h) => h,
                None => {
                    let all: Vec<(Path, H256)> = store.leaves(span(depth, &id.prefix)).collect();
                    SubtreeSummary::of_leaves(depth, &all).hash
                }
            };
            SubtreeSummary {
                hash,
                leaves: LeafCount::Many,
            }
        }
    }
}

/// A proof that a key holds a value in the state with a given root: the hashes of the
/// siblings on the key's path, from the root down to where its leaf sits alone.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct ReadProof {
    pub siblings: Vec<H256>,
}

/// The read proof of the leaf at `key`, if the trie in `store` holds that key.
pub fn prove(store: &dyn TrieStore, key: &[u8]) -> Option<ReadProof> {
    // Another key's leaf where `key` would sit needs its value hash: none, since absent
    // keys have no read proof anyway.
    let proof = prove_storage(store, key, &|_| None)?;
    (proof.terminal == Terminal::Leaf).then_some(ReadProof {
        siblings: proof.siblings,
    })
}

/// Whether `proof` shows that `key` holds `value` in the state whose root is `root`.
pub fn verify_read_proof(root: &H256, key: &[u8], value: &[u8], proof: &ReadProof) -> bool {
    let proof = StorageProof {
        siblings: proof.siblings.clone(),
        terminal: Terminal::Leaf,
    };
    verify_storage_proof(root, key, Some(value), &proof)
}

/// How a storage proof ends, below its siblings.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub enum Terminal {
    /// The key's own leaf: the key holds the value the proof is checked with.
    #[codec(index = 0)]
    Leaf,
    /// An empty subtree on the key's path: the key is absent.
    #[codec(index = 1)]
    Empty,
    /// A subtree on the key's path holding one other key's leaf: the key is absent.
    #[codec(index = 2)]
    Other {
        /// That key's path.
        path: Path,
        /// blake3 of its value.
        value_hash: H256,
    },
}

/// A proof of a key's value, or of its absence, in the state with a given root.
#[derive(Debug, Clone, PartialEq, Eq, Encode, Decode)]
pub struct StorageProof {
    /// The siblings on the key's path, from the root down.
    pub siblings: Vec<H256>,
    pub terminal: Terminal,
}

/// The storage proof of `key` in the trie in `store`; `value_hash` gives blake3 of the value
/// of the key at a path (for the leaf that shows another key sits where `key` would).
pub fn prove_storage(
    store: &dyn TrieStore,
    key: &[u8],
    value_hash: &dyn Fn(&Path) -> Option<H256>,
) -> Option<StorageProof> {
    let path = key_path(key);
    let mut siblings = vec![];
    let mut id = SubtreeId::ROOT;
    loop {
        match summary(store, &id).leaves {
            LeafCount::Empty => {
                return Some(StorageProof {
                    siblings,
                    terminal: Terminal::Empty,
                })
            }
            LeafCount::One => {
                let (only, _) = store.leaves(id.span()).next()?;
                let terminal = if only == path {
                    Terminal::Leaf
                } else {
                    Terminal::Other {
                        path: only,
                        value_hash: value_hash(&only)?,
                    }
                };
                return Some(StorageProof { siblings, terminal });
            }
            LeafCount::Many => {
                let (left, right) = id.children()?;
                let (ours, theirs) = if bit(&path, usize::from(id.depth)) {
                    (right, left)
                } else {
                    (left, right)
                };
                siblings.push(summary(store, &theirs).hash);
                id = ours;
            }
        }
    }
}

/// Whether `proof` shows that `key` holds `value` (`None`: that it is absent) in the state
/// whose root is `root`.
pub fn verify_storage_proof(
    root: &H256,
    key: &[u8],
    value: Option<&[u8]>,
    proof: &StorageProof,
) -> bool {
    let depth = proof.siblings.len();
    if depth > usize::from(MAX_DEPTH) {
        return false;
    }
    let path = key_path(key);
    let bottom = match (&proof.terminal, value) {
        (Terminal::Leaf, Some(v)) => leaf_hash(&path, v),
        (Terminal::Empty, None) => EMPTY,
        (
            Terminal::Other {
                path: other,
                value_hash,
            },
            None,
        ) => {
            let shares_prefix = (0..depth).all(|d| bit(other, d) == bit(&path, d));
            if *other == path || !shares_prefix {
                return false;
            }
            let mut buf = Vec::with_capacity(65);
            buf.push(0);
            buf.extend_from_slice(other);
            buf.extend_from_slice(&value_hash.0);
            crate::primitives::blake3_hash(&buf)
        }
        _ => return false,
    };
    let mut hash = bottom;
    for (d, sibling) in proof.siblings.iter().enumerate().rev() {
        hash = if bit(&path, d) {
            node_hash(sibling, &hash)
        } else {
            node_hash(&hash, sibling)
        };
    }
    hash == *root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryState;
    use crate::trie::ChangeSet;
    use proptest::prelude::*;

    fn state(keys: impl IntoIterator<Item = u16>) -> MemoryState {
        let mut s = MemoryState::new();
        let changes: ChangeSet = keys
            .into_iter()
            .map(|k| (k.to_be_bytes().to_vec(), Some(vec![k as u8; 3])))
            .collect();
        s.commit(changes);
        s
    }

    fn entries_of(s: &MemoryState, id: &SubtreeId) -> Vec<(Vec<u8>, Vec<u8>)> {
        use crate::StateRead;
        s.scan_prefix(b"")
            .into_iter()
            .filter(|(k, _)| id.contains(&key_path(k)))
            .collect()
    }

    /// Walks the trie from the root as a joining node would: every subtree checked against
    /// the summary its parent's split vouched for.
    fn download(s: &MemoryState, max_leaves: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        let root = SubtreeSummary {
            hash: s.root(),
            leaves: summary(&s.trie, &SubtreeId::ROOT).leaves,
        };
        let mut out = vec![];
        let mut todo = vec![(SubtreeId::ROOT, root)];
        while let Some((id, expected)) = todo.pop() {
            let entries = entries_of(s, &id);
            if entries.len() <= max_leaves {
                check_entries(&id, &entries, &expected).unwrap();
                out.extend(entries);
            } else {
                let (l, r) = id.children().unwrap();
                let (ls, rs) = (summary(&s.trie, &l), summary(&s.trie, &r));
                assert_eq!(SubtreeSummary::combine(&ls, &rs), expected);
                todo.push((l, ls));
                todo.push((r, rs));
            }
        }
        out.sort();
        out
    }

    #[test]
    fn a_state_downloaded_subtree_by_subtree_checks_against_its_root() {
        use crate::StateRead;
        let s = state(0..500);
        assert_eq!(download(&s, 7), s.scan_prefix(b""));
        assert_eq!(download(&s, 1000), s.scan_prefix(b""));
    }

    #[test]
    fn a_changed_missing_or_extra_entry_is_refused() {
        let s = state(0..100);
        let (left, _) = SubtreeId::ROOT.children().unwrap();
        let expected = summary(&s.trie, &left);
        let good = entries_of(&s, &left);
        check_entries(&left, &good, &expected).unwrap();
        let mut changed = good.clone();
        changed[0].1.push(0);
        assert!(matches!(
            check_entries(&left, &changed, &expected),
            Err(SubtreeError::Mismatch { .. })
        ));
        assert!(check_entries(&left, &good[1..], &expected).is_err());
        let mut doubled = good.clone();
        doubled.push(good[0].clone());
        assert!(matches!(
            check_entries(&left, &doubled, &expected),
            Err(SubtreeError::Duplicate { .. })
        ));
        let outside = entries_of(&s, &SubtreeId::ROOT);
        assert!(matches!(
            check_entries(&left, &outside, &expected),
            Err(SubtreeError::Outside { .. })
        ));
    }

    #[test]
    fn a_lie_about_a_leaf_count_is_caught() {
        let s = state([1, 2]);
        let (l, r) = SubtreeId::ROOT.children().unwrap();
        let (ls, rs) = (summary(&s.trie, &l), summary(&s.trie, &r));
        for (id, mut lie) in [(l, ls), (r, rs)] {
            lie.leaves = match lie.leaves {
                LeafCount::Many => LeafCount::One,
                _ => LeafCount::Many,
            };
            assert!(check_entries(&id, &entries_of(&s, &id), &lie).is_err());
        }
    }

    #[test]
    fn subtree_ids_with_bits_beyond_their_depth_are_invalid() {
        assert!(SubtreeId::ROOT.is_valid());
        let mut prefix = [0; 32];
        prefix[0] = 0x40;
        assert!(!SubtreeId { depth: 1, prefix }.is_valid());
        assert!(SubtreeId { depth: 2, prefix }.is_valid());
        assert!(!SubtreeId { depth: 257, prefix }.is_valid());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn storage_proofs_prove_values_and_absences_and_refuse_lies(
            keys in prop::collection::btree_set(0u16..2000, 0..60),
            absent in prop::collection::btree_set(2000u16..4000, 1..20),
        ) {
            use crate::StateRead;
            use std::collections::BTreeMap;
            let s = state(keys.iter().copied());
            let root = s.root();
            let by_path: BTreeMap<Path, H256> = s
                .scan_prefix(b"")
                .into_iter()
                .map(|(k, v)| (key_path(&k), crate::primitives::blake3_hash(&v)))
                .collect();
            let value_hash = |p: &Path| by_path.get(p).copied();
            for (k, v) in s.scan_prefix(b"") {
                let proof = prove_storage(&s.trie, &k, &value_hash).unwrap();
                prop_assert!(verify_storage_proof(&root, &k, Some(&v), &proof));
                prop_assert!(!verify_storage_proof(&root, &k, None, &proof));
                prop_assert!(!verify_storage_proof(&root, &k, Some(b"other"), &proof));
                let mut hidden = proof.clone();
                hidden.terminal = Terminal::Empty;
                prop_assert!(!verify_storage_proof(&root, &k, None, &hidden), "absence forged");
            }
            for k in absent {
                let k = k.to_be_bytes();
                let proof = prove_storage(&s.trie, &k, &value_hash).unwrap();
                prop_assert!(verify_storage_proof(&root, &k, None, &proof));
                prop_assert!(!verify_storage_proof(&root, &k, Some(b"x"), &proof));
            }
        }


        #[test]
        fn read_proofs_prove_present_values_and_nothing_else(
            keys in prop::collection::btree_set(0u16..2000, 1..60)
        ) {
            use crate::StateRead;
            let s = state(keys.iter().copied());
            let root = s.root();
            for (k, v) in s.scan_prefix(b"") {
                let proof = prove(&s.trie, &k).unwrap();
                prop_assert!(verify_read_proof(&root, &k, &v, &proof));
                let mut other = v.clone();
                other.push(1);
                prop_assert!(!verify_read_proof(&root, &k, &other, &proof));
            }
            prop_assert!(prove(&s.trie, b"absent key").is_none());
            let top = summary(&s.trie, &SubtreeId::ROOT);
            prop_assert_eq!(top.hash, root);
        }
    }
}
