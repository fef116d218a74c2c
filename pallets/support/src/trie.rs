//! The state trie: a compact binary sparse Merkle tree over `blake3(key)`.
//!
//! A subtree with no leaf hashes to zero, a subtree with exactly one leaf hashes to that leaf
//! (`blake3(0x00 ‖ key_hash ‖ blake3(value))`), and any other subtree to
//! `blake3(0x01 ‖ left ‖ right)`. The root therefore depends only on the set of key/value pairs,
//! never on the order they were written in.
//!
//! Only subtrees holding two leaves or more are cached. Updating a block's changes recomputes
//! the nodes on the changed keys' paths and nothing else, so the cost of a block grows with the
//! keys it changed (times the depth, about log2 of the key count), not with the state size.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

/// The writes of one block (or of genesis): `None` deletes a key.
pub type ChangeSet = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

use crate::primitives::{blake3_hash, H256};

/// A key's position in the trie: `blake3(key)`.
pub type Path = [u8; 32];
/// A cached inner node: `(depth, path prefix with the bits at and below depth cleared)`.
pub type NodeKey = (u8, Path);

/// Where a committed trie lives: in memory ([`StateTrie`]) or in a database. Computing a new
/// root reads only the leaves and cached nodes along the changed paths through this.
pub trait TrieStore {
    /// The leaves whose paths lie in `range`, in path order (read lazily: callers usually
    /// stop after two).
    fn leaves<'a>(
        &'a self,
        range: RangeInclusive<Path>,
    ) -> Box<dyn Iterator<Item = (Path, H256)> + 'a>;
    /// The cached hash of an inner node, if cached.
    fn node(&self, key: &NodeKey) -> Option<H256>;
}

pub(crate) const EMPTY: H256 = H256([0; 32]);

/// The committed trie: every leaf and the cached inner nodes.
#[derive(Debug, Clone, Default)]
pub struct StateTrie {
    leaves: BTreeMap<Path, H256>,
    nodes: BTreeMap<NodeKey, H256>,
    root: H256,
}

/// The trie writes of one change set, computed by [`StateTrie::prepare`]. `None` deletes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrieDelta {
    /// Leaf writes by key path.
    pub leaves: BTreeMap<Path, Option<H256>>,
    /// Cached inner node writes.
    pub nodes: BTreeMap<NodeKey, Option<H256>>,
    /// The root after the change.
    pub root: H256,
}

/// The path of a storage key in the trie.
pub fn key_path(key: &[u8]) -> Path {
    blake3_hash(key).0
}

/// The leaf hash of a key path and value.
pub fn leaf_hash(path: &Path, value: &[u8]) -> H256 {
    let mut buf = Vec::with_capacity(65);
    buf.push(0);
    buf.extend_from_slice(path);
    buf.extend_from_slice(&blake3_hash(value).0);
    blake3_hash(&buf)
}

pub(crate) fn node_hash(left: &H256, right: &H256) -> H256 {
    let mut buf = [0u8; 65];
    buf[0] = 1;
    buf[1..33].copy_from_slice(&left.0);
    buf[33..].copy_from_slice(&right.0);
    blake3_hash(&buf)
}

pub(crate) fn bit(path: &Path, depth: usize) -> bool {
    path[depth / 8] & (0x80 >> (depth % 8)) != 0
}

pub(crate) fn with_bit(mut path: Path, depth: usize) -> Path {
    path[depth / 8] |= 0x80 >> (depth % 8);
    path
}

/// The paths covered by the subtree at `depth` whose path starts with `prefix`.
pub(crate) fn span(depth: usize, prefix: &Path) -> RangeInclusive<Path> {
    let mut hi = *prefix;
    for d in depth..256 {
        hi = with_bit(hi, d);
    }
    *prefix..=hi
}

impl StateTrie {
    /// The root of the committed trie.
    pub fn root(&self) -> H256 {
        self.root
    }

    /// Computes the trie delta and new root for `changes`, leaving `self` untouched.
    pub fn prepare(&self, changes: &ChangeSet) -> TrieDelta {
        prepare(self, changes)
    }

    /// Applies a delta computed by [`StateTrie::prepare`] on this same trie.
    pub fn apply(&mut self, delta: TrieDelta) {
        for (path, leaf) in delta.leaves {
            match leaf {
                Some(h) => self.leaves.insert(path, h),
                None => self.leaves.remove(&path),
            };
        }
        for (key, node) in delta.nodes {
            match node {
                Some(h) => self.nodes.insert(key, h),
                None => self.nodes.remove(&key),
            };
        }
        self.root = delta.root;
    }

    /// Number of cached inner nodes (for tests and metrics).
    pub fn cached_nodes(&self) -> usize {
        self.nodes.len()
    }
}

impl TrieStore for StateTrie {
    fn leaves<'a>(
        &'a self,
        range: RangeInclusive<Path>,
    ) -> Box<dyn Iterator<Item = (Path, H256)> + 'a> {
        Box::new(self.leaves.range(range).map(|(p, h)| (*p, *h)))
    }

    fn node(&self, key: &NodeKey) -> Option<H256> {
        self.nodes.get(key).copied()
    }
}

/// Computes the trie delta and new root that `changes` make to the trie in `store`.
pub fn prepare(store: &dyn TrieStore, changes: &ChangeSet) -> TrieDelta {
    let mut delta = TrieDelta::default();
    for (key, value) in changes {
        let path = key_path(key);
        delta
            .leaves
            .insert(path, value.as_ref().map(|v| leaf_hash(&path, v)));
    }
    let changed: Vec<Path> = delta.leaves.keys().copied().collect();
    let mut view = View {
        store,
        delta: &mut delta,
    };
    let root = view.subtree(0, [0; 32], &changed);
    delta.root = root;
    delta
}

struct View<'a> {
    store: &'a dyn TrieStore,
    delta: &'a mut TrieDelta,
}

impl View<'_> {
    /// Up to two leaves of the subtree, pending writes included.
    fn first_two(&self, depth: usize, prefix: &Path) -> Vec<(Path, H256)> {
        self.leaves_in(depth, prefix, 2)
    }

    fn leaves_in(&self, depth: usize, prefix: &Path, limit: usize) -> Vec<(Path, H256)> {
        let range = span(depth, prefix);
        let mut base = self.store.leaves(range.clone()).peekable();
        let mut pending = self.delta.leaves.range(range).peekable();
        let mut out = Vec::new();
        while out.len() < limit {
            let next = match (base.peek(), pending.peek()) {
                (None, None) => break,
                (Some((bk, bv)), None) => {
                    let item = (*bk, Some(*bv));
                    base.next();
                    item
                }
                (None, Some((pk, pv))) => {
                    let item = (**pk, **pv);
                    pending.next();
                    item
                }
                (Some((bk, bv)), Some((pk, pv))) => {
                    if bk < *pk {
                        let item = (*bk, Some(*bv));
                        base.next();
                        item
                    } else {
                        // A pending write shadows the committed leaf at the same path.
                        if bk == *pk {
                            base.next();
                        }
                        let item = (**pk, **pv);
                        pending.next();
                        item
                    }
                }
            };
            if let (path, Some(hash)) = next {
                out.push((path, hash));
            }
        }
        out
    }

    fn cached(&self, key: &NodeKey) -> Option<H256> {
        match self.delta.nodes.get(key) {
            Some(node) => *node,
            None => self.store.node(key),
        }
    }

    /// The hash of the subtree at `(depth, prefix)`; `changed` are the changed paths inside it,
    /// sorted.
    fn subtree(&mut self, depth: usize, prefix: Path, changed: &[Path]) -> H256 {
        let leaves = self.first_two(depth, &prefix);
        if leaves.len() < 2 {
            self.purge(depth, prefix, changed);
            return leaves.first().map_or(EMPTY, |(_, h)| *h);
        }
        // Two leaves or more: depth < 256 because paths are distinct.
        let key = (depth as u8, prefix);
        let all;
        let changed = if changed.is_empty() {
            match self.cached(&key) {
                Some(h) => return h,
                // Not cached (never happens on a consistent trie): rebuild the subtree.
                None => {
                    all = self.leaves_in(depth, &prefix, usize::MAX);
                    all.iter().map(|(p, _)| *p).collect::<Vec<_>>()
                }
            }
        } else {
            changed.to_vec()
        };
        let split = changed.partition_point(|p| !bit(p, depth));
        let left = self.subtree(depth + 1, prefix, &changed[..split]);
        let right = self.subtree(depth + 1, with_bit(prefix, depth), &changed[split..]);
        let hash = node_hash(&left, &right);
        self.delta.nodes.insert(key, Some(hash));
        hash
    }

    /// Drops cached nodes of a subtree that now holds fewer than two leaves. Stale nodes can only
    /// lie on changed paths, and cached nodes form a tree, so this follows `changed` while
    /// nodes are cached.
    fn purge(&mut self, depth: usize, prefix: Path, changed: &[Path]) {
        if depth >= 256 || changed.is_empty() {
            return;
        }
        let key = (depth as u8, prefix);
        if self.cached(&key).is_none() {
            return;
        }
        self.delta.nodes.insert(key, None);
        let split = changed.partition_point(|p| !bit(p, depth));
        self.purge(depth + 1, prefix, &changed[..split]);
        self.purge(depth + 1, with_bit(prefix, depth), &changed[split..]);
    }
}

/// The root computed from scratch, for tests of the incremental algorithm.
pub fn root_from_scratch<'a>(entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> H256 {
    let mut leaves: Vec<(Path, H256)> = entries
        .into_iter()
        .map(|(k, v)| {
            let p = key_path(k);
            (p, leaf_hash(&p, v))
        })
        .collect();
    leaves.sort();
    fn go(depth: usize, leaves: &[(Path, H256)]) -> H256 {
        match leaves {
            [] => EMPTY,
            [(_, h)] => *h,
            _ => {
                let split = leaves.partition_point(|(p, _)| !bit(p, depth));
                node_hash(
                    &go(depth + 1, &leaves[..split]),
                    &go(depth + 1, &leaves[split..]),
                )
            }
        }
    }
    go(0, &leaves)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryState;
    use crate::StateRead;
    use proptest::prelude::*;

    fn check_consistent(state: &MemoryState, trie: &StateTrie) {
        let all = state.scan_prefix(b"");
        let expected = root_from_scratch(all.iter().map(|(k, v)| (k.as_slice(), v.as_slice())));
        assert_eq!(trie.root(), expected);
        // Every cached node still covers two leaves or more: nothing stale is kept.
        for (depth, prefix) in trie.nodes.keys() {
            let n = trie
                .leaves
                .range(span(*depth as usize, prefix))
                .take(2)
                .count();
            assert_eq!(n, 2, "stale node at depth {depth}");
        }
    }

    #[test]
    fn empty_and_single_key_roots() {
        let mut s = MemoryState::new();
        assert_eq!(s.root(), EMPTY);
        let root = s.commit(ChangeSet::from([(b"a".to_vec(), Some(b"1".to_vec()))]));
        assert_eq!(root, leaf_hash(&key_path(b"a"), b"1"));
        let root = s.commit(ChangeSet::from([(b"a".to_vec(), None)]));
        assert_eq!(root, EMPTY);
    }

    #[test]
    fn prepare_does_not_change_the_committed_root() {
        let mut s = MemoryState::new();
        let r1 = s.commit(ChangeSet::from([(b"a".to_vec(), Some(b"1".to_vec()))]));
        let delta = s.prepare(&ChangeSet::from([(b"b".to_vec(), Some(b"2".to_vec()))]));
        assert_ne!(delta.root, r1);
        assert_eq!(s.root(), r1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn incremental_root_equals_root_from_scratch(
            batches in prop::collection::vec(
                prop::collection::vec((0u8..40, prop::option::of(0u8..4)), 0..20), 1..12)
        ) {
            let mut s = MemoryState::new();
            for batch in batches {
                let changes: ChangeSet = batch
                    .into_iter()
                    .map(|(k, v)| (vec![k], v.map(|v| vec![v])))
                    .collect();
                s.commit(changes);
                check_consistent(&s, &s.trie);
            }
        }
    }
}
