//! An append-only sequence stored in fixed-size chunks.

use std::ops::{Index, IndexMut};

/// Elements per chunk: large enough that the chunk table stays small (a
/// million nodes need 256 entries), small enough that a chunk is a modest
/// allocation that the allocator reuses.
const CHUNK: usize = 4096;

/// A sequence indexed like a `Vec` whose full chunks never move.
///
/// Growing a `Vec` of a million nodes copies every node into a fresh
/// allocation twice as large, and the fresh pages must be zeroed by the
/// kernel before the copy: a large share of the time of a rewrite of a
/// large graph. Here only a partly filled chunk grows like a `Vec` (so a
/// small graph takes little memory) and a full chunk never moves, so
/// adding an element costs the same however long the sequence is.
#[derive(Clone, Debug, Default)]
pub(crate) struct Chunked<T> {
    chunks: Vec<Vec<T>>,
    len: usize,
}

impl<T> Chunked<T> {
    /// The number of elements.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Appends `value` at index `len()`.
    pub(crate) fn push(&mut self, value: T) {
        match self.chunks.last_mut() {
            Some(chunk) if chunk.len() < CHUNK => chunk.push(value),
            // After the first chunk, a new chunk will surely fill up.
            last => {
                let capacity = if last.is_some() { CHUNK } else { 0 };
                let mut chunk = Vec::with_capacity(capacity);
                chunk.push(value);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
    }

    /// The element at `index`, if `index < len()`.
    pub(crate) fn get(&self, index: usize) -> Option<&T> {
        self.chunks.get(index / CHUNK)?.get(index % CHUNK)
    }

    /// The element at `index`, mutably, if `index < len()`.
    pub(crate) fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        self.chunks.get_mut(index / CHUNK)?.get_mut(index % CHUNK)
    }

    /// The elements in index order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.chunks.iter().flatten()
    }
}

impl<T> Index<usize> for Chunked<T> {
    type Output = T;

    fn index(&self, index: usize) -> &T {
        match self.get(index) {
            Some(value) => value,
            None => panic!("index {index} out of a sequence of {}", self.len),
        }
    }
}

impl<T> IndexMut<usize> for Chunked<T> {
    fn index_mut(&mut self, index: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(index) {
            Some(value) => value,
            None => panic!("index {index} out of a sequence of {len}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{CHUNK, Chunked};

    #[test]
    fn indexes_and_iterates_across_chunk_boundaries() {
        let mut seq = Chunked::default();
        let n = 2 * CHUNK + 3;
        for i in 0..n {
            seq.push(i);
        }
        assert_eq!(seq.len(), n);
        assert_eq!(seq[CHUNK - 1], CHUNK - 1);
        assert_eq!(seq[CHUNK], CHUNK);
        assert_eq!(seq.get(n), None);
        seq[CHUNK + 1] = 7;
        let copy = seq.clone();
        assert_eq!(copy.iter().count(), n);
        assert_eq!(copy[CHUNK + 1], 7);
        assert!(
            copy.iter()
                .enumerate()
                .all(|(i, &v)| v == i || i == CHUNK + 1)
        );
        // A push onto the clone does not move the full chunks.
        let mut copy = copy;
        let first = &copy[0] as *const usize;
        copy.push(n);
        copy.push(n + 1);
        assert_eq!(&copy[0] as *const usize, first);
        assert_eq!((copy[n], copy[n + 1]), (n, n + 1));
    }
}
