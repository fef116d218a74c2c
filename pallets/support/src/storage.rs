//! State storage: a read-only committed state, an overlay of pending changes with nested
//! transactions, and typed storage items declared with
//! [`storage_value!`](crate::storage_value), [`storage_map!`](crate::storage_map) and
//! [`storage_double_map!`](crate::storage_double_map).
//!
//! Keys are `"<Pallet>::<Item>/" ++ SCALE(key)`. The trailing `/` cannot occur in an item name,
//! so no item's prefix is a prefix of another item's, and a prefix scan finds exactly one item.

use std::collections::BTreeMap;
use std::ops::Bound;

use parity_scale_codec::{Decode, Encode};

use crate::primitives::H256;
use crate::trie::{ChangeSet, StateTrie, TrieDelta};

/// Read access to committed state.
pub trait StateRead {
    /// The value under `key`, if any.
    fn get(&self, key: &[u8]) -> Option<Vec<u8>>;
    /// All `(key, value)` pairs whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)>;
}

/// State a block can be executed on: readable, and able to compute the root a change set
/// would produce without applying it.
pub trait Backend: StateRead {
    /// The trie delta and new root for `changes`.
    fn prepare(&self, changes: &ChangeSet) -> TrieDelta;
    /// The current root.
    fn root(&self) -> H256;
}

/// The whole state in memory, with its state trie: genesis, tests and simulations use it. A
/// database-backed state implements [`Backend`] over the same trie code
/// ([`crate::trie::prepare`] over a [`crate::TrieStore`]).
#[derive(Debug, Clone, Default)]
pub struct MemoryState {
    entries: BTreeMap<Vec<u8>, Vec<u8>>,
    pub(crate) trie: StateTrie,
}

impl MemoryState {
    /// An empty state.
    pub fn new() -> Self {
        Self::default()
    }

    /// The root committing to every key and value.
    pub fn root(&self) -> H256 {
        self.trie.root()
    }

    /// The trie changes and root that `changes` would produce, without applying them. Cost grows
    /// with the number of changed keys (times the trie depth), not with the state size.
    pub fn prepare(&self, changes: &ChangeSet) -> TrieDelta {
        self.trie.prepare(changes)
    }

    /// Applies `changes` together with the trie delta `prepare` computed for them.
    pub fn apply(&mut self, changes: ChangeSet, delta: TrieDelta) {
        for (key, value) in changes {
            match value {
                Some(v) => {
                    self.entries.insert(key, v);
                }
                None => {
                    self.entries.remove(&key);
                }
            }
        }
        self.trie.apply(delta);
    }

    /// Applies `changes`, computing the trie delta; returns the new root.
    pub fn commit(&mut self, changes: ChangeSet) -> H256 {
        let delta = self.prepare(&changes);
        let root = delta.root;
        self.apply(changes, delta);
        root
    }

    /// Number of cached inner nodes of the state trie.
    pub fn trie_nodes(&self) -> usize {
        self.trie.cached_nodes()
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the state holds no key.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

impl Backend for MemoryState {
    fn prepare(&self, changes: &ChangeSet) -> TrieDelta {
        MemoryState::prepare(self, changes)
    }
    fn root(&self) -> H256 {
        MemoryState::root(self)
    }
}

impl StateRead for MemoryState {
    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.entries.get(key).cloned()
    }

    fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.entries
            .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

/// Pending writes over a committed state, with nested transactions so a failed call can be
/// rolled back without losing the rest of the block.
pub struct Overlay<'a> {
    base: &'a dyn StateRead,
    layers: Vec<ChangeSet>,
}

impl std::fmt::Debug for Overlay<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("layers", &self.layers.len())
            .finish()
    }
}

impl<'a> Overlay<'a> {
    /// An overlay with no pending change.
    pub fn new(base: &'a dyn StateRead) -> Self {
        Self {
            base,
            layers: vec![ChangeSet::new()],
        }
    }

    /// Raw read through the pending layers to the base.
    pub fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        for layer in self.layers.iter().rev() {
            if let Some(v) = layer.get(key) {
                return v.clone();
            }
        }
        self.base.get(key)
    }

    /// Raw write.
    pub fn set(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.top().insert(key, Some(value));
    }

    /// Raw delete.
    pub fn remove(&mut self, key: Vec<u8>) {
        self.top().insert(key, None);
    }

    fn top(&mut self) -> &mut ChangeSet {
        if self.layers.is_empty() {
            self.layers.push(ChangeSet::new());
        }
        let last = self.layers.len() - 1;
        &mut self.layers[last]
    }

    /// Every `(key, value)` under `prefix`, pending writes included, in key order.
    pub fn scan_prefix(&self, prefix: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut merged: BTreeMap<Vec<u8>, Option<Vec<u8>>> = self
            .base
            .scan_prefix(prefix)
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        for layer in &self.layers {
            for (k, v) in layer
                .range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(prefix))
            {
                merged.insert(k.clone(), v.clone());
            }
        }
        merged
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect()
    }

    /// Reads and decodes a value. A value that does not decode is treated as absent: the state
    /// is only ever written by this code, so that would be a bug, not an outside input.
    pub fn get_decoded<T: Decode>(&self, key: &[u8]) -> Option<T> {
        let raw = self.get(key)?;
        T::decode(&mut raw.as_slice()).ok()
    }

    /// Encodes and writes a value.
    pub fn put_encoded<T: Encode>(&mut self, key: Vec<u8>, value: &T) {
        self.set(key, value.encode());
    }

    /// Starts a nested transaction.
    pub fn start_transaction(&mut self) {
        self.layers.push(ChangeSet::new());
    }

    /// Keeps the writes of the innermost transaction.
    pub fn commit_transaction(&mut self) {
        if self.layers.len() < 2 {
            return;
        }
        if let Some(top) = self.layers.pop() {
            let below = self.top();
            below.extend(top);
        }
    }

    /// Drops the writes of the innermost transaction.
    pub fn rollback_transaction(&mut self) {
        if self.layers.len() >= 2 {
            self.layers.pop();
        }
    }

    /// All pending writes, outer and inner transactions merged.
    pub fn into_changes(mut self) -> ChangeSet {
        while self.layers.len() > 1 {
            self.commit_transaction();
        }
        self.layers.pop().unwrap_or_default()
    }
}

/// The storage prefix of an item: `"<pallet>::<item>/"`.
pub fn item_prefix(pallet: &str, item: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(pallet.len() + item.len() + 3);
    p.extend_from_slice(pallet.as_bytes());
    p.extend_from_slice(b"::");
    p.extend_from_slice(item.as_bytes());
    p.push(b'/');
    p
}

/// Declares a single typed value in storage.
///
/// ```ignore
/// storage_value!(pub Epoch: u64, "Failover");
/// ```
#[macro_export]
macro_rules! storage_value {
    ($(#[$meta:meta])* $vis:vis $name:ident : $value:ty, $pallet:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name;

        #[allow(dead_code)]
        impl $name {
            /// The storage key.
            pub fn key() -> Vec<u8> {
                $crate::storage::item_prefix($pallet, stringify!($name))
            }
            /// The stored value, if any.
            pub fn get(state: &$crate::Overlay<'_>) -> Option<$value> {
                state.get_decoded(&Self::key())
            }
            /// Writes the value.
            pub fn put(state: &mut $crate::Overlay<'_>, value: &$value) {
                state.put_encoded(Self::key(), value)
            }
            /// Deletes the value.
            pub fn kill(state: &mut $crate::Overlay<'_>) {
                state.remove(Self::key())
            }
        }
    };
}

/// Declares a typed map in storage, keyed by the SCALE encoding of `$key`.
#[macro_export]
macro_rules! storage_map {
    ($(#[$meta:meta])* $vis:vis $name:ident : $key:ty => $value:ty, $pallet:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name;

        #[allow(dead_code)]
        impl $name {
            /// The prefix under which every entry lives.
            pub fn prefix() -> Vec<u8> {
                $crate::storage::item_prefix($pallet, stringify!($name))
            }
            /// The storage key of one entry.
            pub fn key(k: &$key) -> Vec<u8> {
                let mut key = Self::prefix();
                $crate::codec::Encode::encode_to(k, &mut key);
                key
            }
            /// The entry under `k`, if any.
            pub fn get(state: &$crate::Overlay<'_>, k: &$key) -> Option<$value> {
                state.get_decoded(&Self::key(k))
            }
            /// Whether an entry exists under `k`.
            pub fn contains(state: &$crate::Overlay<'_>, k: &$key) -> bool {
                state.get(&Self::key(k)).is_some()
            }
            /// Writes the entry under `k`.
            pub fn insert(state: &mut $crate::Overlay<'_>, k: &$key, v: &$value) {
                state.put_encoded(Self::key(k), v)
            }
            /// Deletes the entry under `k`.
            pub fn remove(state: &mut $crate::Overlay<'_>, k: &$key) {
                state.remove(Self::key(k))
            }
            /// Every entry, in key-encoding order.
            pub fn iter(state: &$crate::Overlay<'_>) -> Vec<($key, $value)> {
                let prefix = Self::prefix();
                state
                    .scan_prefix(&prefix)
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let key = <$key as $crate::codec::Decode>::decode(&mut &k[prefix.len()..]).ok()?;
                        let value = <$value as $crate::codec::Decode>::decode(&mut v.as_slice()).ok()?;
                        Some((key, value))
                    })
                    .collect()
            }
        }
    };
}

/// Declares a typed map with a two-part key; entries sharing the first part can be listed.
#[macro_export]
macro_rules! storage_double_map {
    ($(#[$meta:meta])* $vis:vis $name:ident : ($k1:ty, $k2:ty) => $value:ty, $pallet:literal) => {
        $(#[$meta])*
        #[derive(Debug)]
        $vis struct $name;

        #[allow(dead_code)]
        impl $name {
            /// The prefix under which every entry lives.
            pub fn prefix() -> Vec<u8> {
                $crate::storage::item_prefix($pallet, stringify!($name))
            }
            fn first_prefix(k1: &$k1) -> Vec<u8> {
                let mut key = Self::prefix();
                $crate::codec::Encode::encode_to(k1, &mut key);
                key
            }
            /// The storage key of one entry.
            pub fn key(k1: &$k1, k2: &$k2) -> Vec<u8> {
                let mut key = Self::first_prefix(k1);
                $crate::codec::Encode::encode_to(k2, &mut key);
                key
            }
            /// The entry under `(k1, k2)`, if any.
            pub fn get(state: &$crate::Overlay<'_>, k1: &$k1, k2: &$k2) -> Option<$value> {
                state.get_decoded(&Self::key(k1, k2))
            }
            /// Writes the entry under `(k1, k2)`.
            pub fn insert(state: &mut $crate::Overlay<'_>, k1: &$k1, k2: &$k2, v: &$value) {
                state.put_encoded(Self::key(k1, k2), v)
            }
            /// Deletes the entry under `(k1, k2)`.
            pub fn remove(state: &mut $crate::Overlay<'_>, k1: &$k1, k2: &$k2) {
                state.remove(Self::key(k1, k2))
            }
            /// Every entry whose first key is `k1`.
            pub fn iter_prefix(state: &$crate::Overlay<'_>, k1: &$k1) -> Vec<($k2, $value)> {
                let prefix = Self::first_prefix(k1);
                state
                    .scan_prefix(&prefix)
                    .into_iter()
                    .filter_map(|(k, v)| {
                        let key = <$k2 as $crate::codec::Decode>::decode(&mut &k[prefix.len()..]).ok()?;
                        let value = <$value as $crate::codec::Decode>::decode(&mut v.as_slice()).ok()?;
                        Some((key, value))
                    })
                    .collect()
            }
            /// Deletes every entry whose first key is `k1`.
            pub fn remove_prefix(state: &mut $crate::Overlay<'_>, k1: &$k1) {
                let prefix = Self::first_prefix(k1);
                for (k, _) in state.scan_prefix(&prefix) {
                    state.remove(k);
                }
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::storage_value!(Counter: u32, "Test");
    crate::storage_map!(Names: u32 => String, "Test");
    crate::storage_map!(NamesLong: u32 => String, "Test");
    crate::storage_double_map!(Pairs: (String, u8) => u64, "Test");

    #[test]
    fn typed_items_round_trip_and_do_not_collide() {
        let base = MemoryState::new();
        let mut o = Overlay::new(&base);
        Counter::put(&mut o, &3);
        Names::insert(&mut o, &1, &"a".into());
        Names::insert(&mut o, &2, &"b".into());
        NamesLong::insert(&mut o, &9, &"z".into());
        Pairs::insert(&mut o, &"s".into(), &1, &10);
        Pairs::insert(&mut o, &"s".into(), &2, &20);
        Pairs::insert(&mut o, &"t".into(), &1, &30);
        assert_eq!(Counter::get(&o), Some(3));
        assert_eq!(
            Names::iter(&o),
            vec![(1, "a".to_string()), (2, "b".to_string())]
        );
        assert_eq!(Pairs::iter_prefix(&o, &"s".into()), vec![(1, 10), (2, 20)]);
        Pairs::remove_prefix(&mut o, &"s".into());
        assert!(Pairs::iter_prefix(&o, &"s".into()).is_empty());
        assert_eq!(Pairs::get(&o, &"t".into(), &1), Some(30));
    }

    #[test]
    fn rollback_drops_only_the_inner_transaction() {
        let mut base = MemoryState::new();
        base.commit(ChangeSet::from([(b"k".to_vec(), Some(b"v0".to_vec()))]));
        let mut o = Overlay::new(&base);
        o.set(b"a".to_vec(), b"1".to_vec());
        o.start_transaction();
        o.set(b"a".to_vec(), b"2".to_vec());
        o.remove(b"k".to_vec());
        assert_eq!(o.get(b"k"), None);
        o.rollback_transaction();
        assert_eq!(o.get(b"a"), Some(b"1".to_vec()));
        assert_eq!(o.get(b"k"), Some(b"v0".to_vec()));
        o.start_transaction();
        o.remove(b"k".to_vec());
        o.commit_transaction();
        let changes = o.into_changes();
        assert_eq!(changes.get(b"k".as_slice()), Some(&None));
        assert_eq!(changes.get(b"a".as_slice()), Some(&Some(b"1".to_vec())));
    }
}
