//! The hasher of the graph's name tables.
//!
//! Every node insertion hashes its name and each of its scopes, and every
//! lookup by name hashes again; with std's SipHash those hashes were a large
//! share of a rewrite's time. Names come from the graph being edited, not
//! from an adversary choosing collisions, so a fast multiplicative hash is
//! enough. Each 8-byte word is mixed with a folded 64×64→128-bit multiply,
//! which spreads every input bit over both halves of the state (a plain
//! multiply only carries differences upwards, and the table indexes by the
//! low bits).

use super::NodeId;
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A deterministic (unseeded) hasher for strings and small integers.
#[derive(Clone, Copy, Debug, Default)]
pub struct NameHasher {
    state: u64,
}

/// An odd 64-bit constant with well-spread bits (from the fractional part of π).
const MIX: u64 = 0x243f_6a88_85a3_08d3;

impl NameHasher {
    fn mix(&mut self, word: u64) {
        let product = u128::from(self.state ^ word) * u128::from(MIX);
        self.state = (product as u64) ^ ((product >> 64) as u64);
    }
}

impl Hasher for NameHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for word in &mut words {
            let mut buf = [0u8; 8];
            buf.copy_from_slice(word);
            self.mix(u64::from_le_bytes(buf));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            // The length goes into the top byte so "a" and "a\0" differ.
            self.mix(u64::from_le_bytes(buf) ^ ((rest.len() as u64) << 56));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    fn finish(&self) -> u64 {
        self.state
    }
}

/// A map keyed by node or scope names.
pub(crate) type NameMap<V> = HashMap<String, V, BuildHasherDefault<NameHasher>>;

/// A set of node ids with a fast (not DoS-resistant) hash: node ids come
/// from the graph, not from an adversary.
pub type NodeSet = HashSet<NodeId, BuildHasherDefault<NameHasher>>;

/// A map keyed by node id with the hash of [`NodeSet`].
pub type NodeMap<V> = HashMap<NodeId, V, BuildHasherDefault<NameHasher>>;

#[cfg(test)]
mod tests {
    use super::NameHasher;
    use std::collections::HashSet;
    use std::hash::{BuildHasher, BuildHasherDefault};

    #[test]
    fn names_differing_in_one_byte_spread_over_the_low_bits() {
        let build = BuildHasherDefault::<NameHasher>::default();
        // 4096 names that differ only in a few bytes in the middle of a word.
        let low: HashSet<u64> = (0..4096)
            .map(|i| build.hash_one(format!("layer{i:04}/BatchNorm_Fold/mul")) & 0xfff)
            .collect();
        // A uniform hash fills about 63% of 4096 buckets; a plain multiply
        // would put all of them in a handful.
        assert!(low.len() > 2000, "{} distinct low-bit patterns", low.len());
        assert_ne!(build.hash_one("a"), build.hash_one("a\0"));
    }
}
