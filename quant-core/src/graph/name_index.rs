//! The index from node names to node ids.

use super::NodeId;
use super::hash::NameHasher;
use hashbrown::HashTable;
use std::hash::{BuildHasher, BuildHasherDefault};

/// Finds a live node by name in constant time.
///
/// The names themselves live in the nodes: an entry is the node's id and
/// 32 bits of its name's hash (8 bytes, against 32 for a map owning a copy
/// of every name), and a lookup compares the name it is given with the
/// node's. Growing the table rehashes from the stored bits, without reading
/// a single name.
#[derive(Clone, Debug, Default)]
pub(crate) struct NameIndex {
    table: HashTable<Entry>,
}

#[derive(Clone, Copy, Debug)]
struct Entry {
    id: NodeId,
    hash: u32,
}

/// The name's hash, folded to the 32 bits an entry keeps.
fn hash32(name: &str) -> u32 {
    let full = BuildHasherDefault::<NameHasher>::default().hash_one(name);
    (full ^ (full >> 32)) as u32
}

/// The table's hash of an entry: the 32 bits in both halves, so that the
/// low bits (the bucket) and the top bits (the tag the table compares
/// first) both come from the name.
fn spread(hash: u32) -> u64 {
    (u64::from(hash) << 32) | u64::from(hash)
}

impl NameIndex {
    /// The node called `name`; `name_of` gives the name of a live node.
    pub(crate) fn get<'a>(
        &self,
        name: &str,
        name_of: impl Fn(NodeId) -> &'a str,
    ) -> Option<NodeId> {
        let hash = hash32(name);
        self.table
            .find(spread(hash), |e| e.hash == hash && name_of(e.id) == name)
            .map(|e| e.id)
    }

    /// Records that `id` is called `name`, which no live node is.
    pub(crate) fn insert(&mut self, name: &str, id: NodeId) {
        let hash = hash32(name);
        self.table
            .insert_unique(spread(hash), Entry { id, hash }, |e| spread(e.hash));
    }

    /// Forgets node `id`, called `name`.
    pub(crate) fn remove(&mut self, name: &str, id: NodeId) {
        let hash = hash32(name);
        if let Ok(entry) = self.table.find_entry(spread(hash), |e| e.id == id) {
            entry.remove();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::NameIndex;
    use crate::graph::NodeId;

    #[test]
    fn finds_live_names_and_forgets_removed_ones() {
        let names: Vec<String> = (0..10_000).map(|i| format!("layer{i}/Conv2D")).collect();
        let name_of = |id: NodeId| names[id.index()].as_str();
        let mut index = NameIndex::default();
        for (i, name) in names.iter().enumerate() {
            index.insert(name, NodeId(i as u32));
        }
        for (i, name) in names.iter().enumerate().filter(|(i, _)| i % 2 == 0) {
            index.remove(name, NodeId(i as u32));
        }
        for (i, name) in names.iter().enumerate() {
            let expected = (i % 2 == 1).then_some(NodeId(i as u32));
            assert_eq!(index.get(name, name_of), expected, "{name}");
        }
        assert_eq!(index.get("layer1/Conv2D_1", name_of), None);
        assert_eq!(index.get("", name_of), None);
    }
}
