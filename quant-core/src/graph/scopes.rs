//! Which name scopes have live nodes under them.

use super::hash::NameMap;

/// The scopes (`/`-prefixes of live node names) of a graph.
///
/// A scope's count is the number of live nodes directly under it plus the
/// number of its direct sub-scopes that exist, so a scope exists exactly
/// while its count is positive. Adding a node touches its parent scope, and
/// the grandparents only when the parent scope comes into existence
/// (removal mirrors this). Builders add runs of nodes under one scope, so
/// the last parent scope is remembered and such runs need no hash lookup.
#[derive(Clone, Debug, Default)]
pub(crate) struct Scopes {
    /// Every scope that ever existed, with its index into `counts`.
    ids: NameMap<usize>,
    counts: Vec<usize>,
    /// The last scope looked up, and its id (meaningless while empty).
    last: String,
    last_id: usize,
}

impl Scopes {
    /// Counts the node `name` in.
    pub(crate) fn added(&mut self, name: &str) {
        let mut child = name;
        while let Some((scope, _)) = child.rsplit_once('/') {
            let id = self.id(scope);
            self.counts[id] += 1;
            if self.counts[id] > 1 {
                return;
            }
            child = scope;
        }
    }

    /// Counts the node `name` out.
    pub(crate) fn removed(&mut self, name: &str) {
        let mut child = name;
        while let Some((scope, _)) = child.rsplit_once('/') {
            let id = self.id(scope);
            // A live node's scopes all have positive counts.
            self.counts[id] = self.counts[id].saturating_sub(1);
            if self.counts[id] > 0 {
                return;
            }
            child = scope;
        }
    }

    /// Whether some live node lives under `scope/`.
    pub(crate) fn exists(&self, scope: &str) -> bool {
        self.ids.get(scope).is_some_and(|&id| self.counts[id] > 0)
    }

    fn id(&mut self, scope: &str) -> usize {
        if !self.last.is_empty() && self.last == scope {
            return self.last_id;
        }
        let id = match self.ids.get(scope) {
            Some(&id) => id,
            None => {
                let id = self.counts.len();
                self.counts.push(0);
                self.ids.insert(scope.to_string(), id);
                id
            }
        };
        self.last.clear();
        self.last.push_str(scope);
        self.last_id = id;
        id
    }
}
