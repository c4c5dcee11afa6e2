//! [`Attrs`]: a node's attributes, sorted by name.

use super::{AttrName, AttrValue};
use std::fmt;

/// The attributes of a node, sorted by name.
///
/// A sorted vector rather than a B-tree: nodes carry a handful of
/// attributes, and a B-tree's smallest node has room for eleven (about
/// 600 bytes here), which made attribute maps the largest allocation of
/// every node in large graphs.
#[derive(Clone, Default, PartialEq)]
pub struct Attrs {
    items: Vec<(AttrName, AttrValue)>,
}

/// Iterator over `(name, value)` pairs in name order.
pub type Iter<'a> = std::iter::Map<
    std::slice::Iter<'a, (AttrName, AttrValue)>,
    fn(&'a (AttrName, AttrValue)) -> (&'a AttrName, &'a AttrValue),
>;

impl Attrs {
    /// No attributes.
    pub fn new() -> Attrs {
        Attrs::default()
    }

    fn position(&self, name: &str) -> Result<usize, usize> {
        self.items.binary_search_by(|(k, _)| k.as_ref().cmp(name))
    }

    /// The value of `name`.
    pub fn get(&self, name: &str) -> Option<&AttrValue> {
        self.position(name).ok().map(|i| &self.items[i].1)
    }

    /// The value of `name`, to modify in place.
    pub fn get_mut(&mut self, name: &str) -> Option<&mut AttrValue> {
        self.position(name).ok().map(|i| &mut self.items[i].1)
    }

    /// Whether `name` is set.
    pub fn contains_key(&self, name: &str) -> bool {
        self.position(name).is_ok()
    }

    /// Sets `name`; returns the value it replaces.
    pub fn insert(&mut self, name: AttrName, value: AttrValue) -> Option<AttrValue> {
        match self.position(&name) {
            Ok(i) => Some(std::mem::replace(&mut self.items[i].1, value)),
            Err(i) => {
                self.items.insert(i, (name, value));
                None
            }
        }
    }

    /// Unsets `name`; returns its value.
    pub fn remove(&mut self, name: &str) -> Option<AttrValue> {
        self.position(name).ok().map(|i| self.items.remove(i).1)
    }

    /// The `(name, value)` pairs in name order.
    pub fn iter(&self) -> Iter<'_> {
        self.items.iter().map(|(k, v)| (k, v))
    }

    /// The names in order.
    pub fn keys(&self) -> impl Iterator<Item = &AttrName> {
        self.items.iter().map(|(k, _)| k)
    }

    /// The number of attributes.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

impl fmt::Debug for Attrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl FromIterator<(AttrName, AttrValue)> for Attrs {
    /// Later pairs replace earlier ones of the same name.
    fn from_iter<I: IntoIterator<Item = (AttrName, AttrValue)>>(pairs: I) -> Attrs {
        let mut attrs = Attrs::new();
        attrs.extend(pairs);
        attrs
    }
}

impl Extend<(AttrName, AttrValue)> for Attrs {
    fn extend<I: IntoIterator<Item = (AttrName, AttrValue)>>(&mut self, pairs: I) {
        for (name, value) in pairs {
            self.insert(name, value);
        }
    }
}

impl<'a> IntoIterator for &'a Attrs {
    type Item = (&'a AttrName, &'a AttrValue);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

impl IntoIterator for Attrs {
    type Item = (AttrName, AttrValue);
    type IntoIter = std::vec::IntoIter<(AttrName, AttrValue)>;

    fn into_iter(self) -> Self::IntoIter {
        self.items.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_stay_sorted_and_later_values_win() {
        let mut a: Attrs = [
            ("b".into(), AttrValue::Int(1)),
            ("a".into(), AttrValue::Int(2)),
            ("b".into(), AttrValue::Int(3)),
        ]
        .into_iter()
        .collect();
        assert_eq!(a.keys().map(|k| k.as_ref()).collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(a.get("b"), Some(&AttrValue::Int(3)));
        assert_eq!(a.insert("c".into(), AttrValue::Bool(true)), None);
        assert_eq!(
            a.insert("a".into(), AttrValue::Int(5)),
            Some(AttrValue::Int(2))
        );
        assert_eq!(a.remove("b"), Some(AttrValue::Int(3)));
        assert!(!a.contains_key("b") && a.len() == 2);
        assert_eq!(format!("{a:?}"), r#"{"a": Int(5), "c": Bool(true)}"#);
    }
}
