//! The consumer lists of one node's output slots.

use super::InletId;
use std::ops::{Index, IndexMut};

/// The inputs each output slot of a node feeds, one list per slot.
///
/// Most nodes have a single output, so the first slot's list is held
/// inline and only further slots live in a table: adding a node allocates
/// nothing here until something consumes it.
#[derive(Clone, Debug, Default)]
pub(crate) struct ConsumerSlots {
    first: Vec<InletId>,
    rest: Box<[Vec<InletId>]>,
    len: usize,
}

impl ConsumerSlots {
    /// `slots` empty lists.
    pub(crate) fn new(slots: usize) -> ConsumerSlots {
        ConsumerSlots {
            first: Vec::new(),
            rest: vec![Vec::new(); slots.saturating_sub(1)].into_boxed_slice(),
            len: slots,
        }
    }

    /// The list of `slot`, if the node has that many outputs.
    pub(crate) fn get(&self, slot: usize) -> Option<&Vec<InletId>> {
        match slot {
            s if s >= self.len => None,
            0 => Some(&self.first),
            s => self.rest.get(s - 1),
        }
    }

    /// The lists in slot order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Vec<InletId>> {
        std::iter::once(&self.first)
            .chain(&self.rest)
            .take(self.len)
    }

    /// Keeps the first `slots` lists, adding empty ones as needed.
    pub(crate) fn resize(&mut self, slots: usize) {
        if slots == 0 {
            self.first.clear();
        }
        let mut rest = std::mem::take(&mut self.rest).into_vec();
        rest.resize(slots.saturating_sub(1), Vec::new());
        self.rest = rest.into_boxed_slice();
        self.len = slots;
    }

    /// Empties every list.
    pub(crate) fn clear(&mut self) {
        self.first.clear();
        self.rest.iter_mut().for_each(Vec::clear);
    }
}

impl Index<usize> for ConsumerSlots {
    type Output = Vec<InletId>;

    fn index(&self, slot: usize) -> &Vec<InletId> {
        self.get(slot)
            .unwrap_or_else(|| panic!("output slot {slot} of a node with {} outputs", self.len))
    }
}

impl IndexMut<usize> for ConsumerSlots {
    fn index_mut(&mut self, slot: usize) -> &mut Vec<InletId> {
        match slot {
            s if s >= self.len => {
                panic!("output slot {slot} of a node with {} outputs", self.len)
            }
            0 => &mut self.first,
            s => &mut self.rest[s - 1],
        }
    }
}
