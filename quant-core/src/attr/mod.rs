//! Typed node attributes, mirroring TensorFlow's `AttrValue`.

use crate::dtype::DType;
use crate::shape::Shape;
use crate::tensor::Tensor;
use std::borrow::Cow;
use std::fmt;

mod map;
pub use map::{Attrs, Iter};

/// An attribute name: borrowed for the names quant's code writes (no
/// allocation per node in large rewrites), owned for names read from files.
pub type AttrName = Cow<'static, str>;

/// Attributes from `(name, value)` pairs with static names.
pub fn attrs<const N: usize>(items: [(&'static str, AttrValue); N]) -> Attrs {
    items.into_iter().map(|(k, v)| (k.into(), v)).collect()
}

/// One attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// An integer (`i`).
    Int(i64),
    /// A float (`f`).
    Float(f32),
    /// A boolean (`b`).
    Bool(bool),
    /// A string (`s`).
    Str(String),
    /// A dtype (`type`).
    Type(DType),
    /// A shape (`shape`); `None` is a shape of unknown rank.
    Shape(Option<Shape>),
    /// A tensor (`tensor`). Boxed so that the other variants, which make up
    /// most attributes, stay small.
    Tensor(Box<Tensor>),
    /// A function name (`func`), kept so unknown ops round-trip.
    Func(String),
    /// A list of integers.
    Ints(Vec<i64>),
    /// A list of floats.
    Floats(Vec<f32>),
    /// A list of booleans.
    Bools(Vec<bool>),
    /// A list of strings.
    Strs(Vec<String>),
    /// A list of dtypes.
    Types(Vec<DType>),
    /// A list of shapes.
    Shapes(Vec<Option<Shape>>),
}

/// The kind of an attribute, used by op specs to check attribute types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttrKind {
    /// [`AttrValue::Int`].
    Int,
    /// [`AttrValue::Float`].
    Float,
    /// [`AttrValue::Bool`].
    Bool,
    /// [`AttrValue::Str`].
    Str,
    /// [`AttrValue::Type`].
    Type,
    /// [`AttrValue::Shape`].
    Shape,
    /// [`AttrValue::Tensor`].
    Tensor,
    /// [`AttrValue::Func`].
    Func,
    /// [`AttrValue::Ints`].
    Ints,
    /// [`AttrValue::Floats`].
    Floats,
    /// [`AttrValue::Bools`].
    Bools,
    /// [`AttrValue::Strs`].
    Strs,
    /// [`AttrValue::Types`].
    Types,
    /// [`AttrValue::Shapes`].
    Shapes,
}

impl AttrKind {
    /// The name used in JSON and in error messages.
    pub fn name(self) -> &'static str {
        match self {
            AttrKind::Int => "int",
            AttrKind::Float => "float",
            AttrKind::Bool => "bool",
            AttrKind::Str => "str",
            AttrKind::Type => "type",
            AttrKind::Shape => "shape",
            AttrKind::Tensor => "tensor",
            AttrKind::Func => "func",
            AttrKind::Ints => "ints",
            AttrKind::Floats => "floats",
            AttrKind::Bools => "bools",
            AttrKind::Strs => "strs",
            AttrKind::Types => "types",
            AttrKind::Shapes => "shapes",
        }
    }
}

impl AttrValue {
    /// The kind of this value.
    pub fn kind(&self) -> AttrKind {
        match self {
            AttrValue::Int(_) => AttrKind::Int,
            AttrValue::Float(_) => AttrKind::Float,
            AttrValue::Bool(_) => AttrKind::Bool,
            AttrValue::Str(_) => AttrKind::Str,
            AttrValue::Type(_) => AttrKind::Type,
            AttrValue::Shape(_) => AttrKind::Shape,
            AttrValue::Tensor(_) => AttrKind::Tensor,
            AttrValue::Func(_) => AttrKind::Func,
            AttrValue::Ints(_) => AttrKind::Ints,
            AttrValue::Floats(_) => AttrKind::Floats,
            AttrValue::Bools(_) => AttrKind::Bools,
            AttrValue::Strs(_) => AttrKind::Strs,
            AttrValue::Types(_) => AttrKind::Types,
            AttrValue::Shapes(_) => AttrKind::Shapes,
        }
    }

    /// Whether this value is acceptable where `kind` is declared. An empty
    /// list is accepted for every list kind, since TensorFlow's empty `list {}`
    /// carries no element type.
    pub fn fits(&self, kind: AttrKind) -> bool {
        let empty_list = matches!(self, AttrValue::Ints(v) if v.is_empty());
        let is_list = matches!(
            kind,
            AttrKind::Ints
                | AttrKind::Floats
                | AttrKind::Bools
                | AttrKind::Strs
                | AttrKind::Types
                | AttrKind::Shapes
        );
        self.kind() == kind || (empty_list && is_list)
    }
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn list<T>(
            f: &mut fmt::Formatter<'_>,
            items: &[T],
            mut each: impl FnMut(&mut fmt::Formatter<'_>, &T) -> fmt::Result,
        ) -> fmt::Result {
            f.write_str("[")?;
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                each(f, item)?;
            }
            f.write_str("]")
        }
        fn shape(f: &mut fmt::Formatter<'_>, s: &Option<Shape>) -> fmt::Result {
            match s {
                Some(s) => write!(f, "{s}"),
                None => f.write_str("<unknown rank>"),
            }
        }
        match self {
            AttrValue::Int(v) => write!(f, "{v}"),
            AttrValue::Float(v) => write!(f, "{v:?}"),
            AttrValue::Bool(v) => write!(f, "{v}"),
            AttrValue::Str(v) => write!(f, "{v:?}"),
            AttrValue::Type(v) => write!(f, "{v}"),
            AttrValue::Shape(v) => shape(f, v),
            AttrValue::Tensor(t) => write!(f, "<{} {:?}>", t.dtype(), t.shape()),
            AttrValue::Func(v) => write!(f, "func {v:?}"),
            AttrValue::Ints(v) => list(f, v, |f, x| write!(f, "{x}")),
            AttrValue::Floats(v) => list(f, v, |f, x| write!(f, "{x:?}")),
            AttrValue::Bools(v) => list(f, v, |f, x| write!(f, "{x}")),
            AttrValue::Strs(v) => list(f, v, |f, x| write!(f, "{x:?}")),
            AttrValue::Types(v) => list(f, v, |f, x| write!(f, "{x}")),
            AttrValue::Shapes(v) => list(f, v, shape),
        }
    }
}

impl From<i64> for AttrValue {
    fn from(v: i64) -> Self {
        AttrValue::Int(v)
    }
}
impl From<f32> for AttrValue {
    fn from(v: f32) -> Self {
        AttrValue::Float(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl From<&str> for AttrValue {
    fn from(v: &str) -> Self {
        AttrValue::Str(v.to_string())
    }
}
impl From<DType> for AttrValue {
    fn from(v: DType) -> Self {
        AttrValue::Type(v)
    }
}
impl From<Tensor> for AttrValue {
    fn from(v: Tensor) -> Self {
        AttrValue::Tensor(Box::new(v))
    }
}
impl From<Vec<i64>> for AttrValue {
    fn from(v: Vec<i64>) -> Self {
        AttrValue::Ints(v)
    }
}
