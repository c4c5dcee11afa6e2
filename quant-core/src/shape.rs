//! Tensor shapes with possibly unknown dimensions.

use serde::{Deserialize, Serialize};
use std::fmt;

/// One dimension of a shape: `None` when unknown (TensorFlow's `-1`).
pub type Dim = Option<usize>;

/// A shape of known rank whose dimensions may be unknown.
///
/// Shapes of unknown rank are written `Option<Shape>` wherever they can occur.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Shape(pub Vec<Dim>);

impl Shape {
    /// A fully known shape.
    pub fn known(dims: &[usize]) -> Shape {
        Shape(dims.iter().map(|&d| Some(d)).collect())
    }

    /// A scalar shape (rank 0).
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.0.len()
    }

    /// The dimensions.
    pub fn dims(&self) -> &[Dim] {
        &self.0
    }

    /// Dimension `i`, or `None` when it is unknown or out of range.
    pub fn dim(&self, i: usize) -> Dim {
        self.0.get(i).copied().flatten()
    }

    /// The concrete dimensions, if every one of them is known.
    pub fn as_known(&self) -> Option<Vec<usize>> {
        self.0.iter().copied().collect()
    }

    /// The element count, if every dimension is known (and it fits a `usize`).
    pub fn num_elements(&self) -> Option<usize> {
        self.0
            .iter()
            .try_fold(1usize, |acc, d| d.and_then(|d| acc.checked_mul(d)))
    }
}

impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Shape {
        Shape::known(dims)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            match d {
                Some(d) => write!(f, "{d}")?,
                None => f.write_str("?")?,
            }
        }
        f.write_str("]")
    }
}
