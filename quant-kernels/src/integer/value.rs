//! Run-time values of the integer executor and the 8-bit element trait the
//! kernels are generic over.

use quant_core::DType;

/// The element storage of a [`Value`].
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Buf {
    /// uint8 levels.
    U8(Vec<u8>),
    /// int8 levels.
    I8(Vec<i8>),
    /// float32 values (model edges).
    F32(Vec<f32>),
    /// int32 values (constants: biases, shapes).
    I32(Vec<i32>),
}

impl Buf {
    /// The element type.
    pub(crate) fn dtype(&self) -> DType {
        match self {
            Buf::U8(_) => DType::U8,
            Buf::I8(_) => DType::I8,
            Buf::F32(_) => DType::F32,
            Buf::I32(_) => DType::I32,
        }
    }
}

/// A dense row-major value with its run-time shape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Value {
    /// Dimensions.
    pub shape: Vec<usize>,
    /// Elements.
    pub buf: Buf,
}

impl Value {
    /// The 8-bit storage type, if the value is 8-bit.
    pub(crate) fn qtype(&self) -> Option<QType> {
        match self.buf {
            Buf::U8(_) => Some(QType::U8),
            Buf::I8(_) => Some(QType::I8),
            _ => None,
        }
    }
}

/// The two 8-bit storage types of quantized tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QType {
    /// uint8, levels 0..=255.
    U8,
    /// int8, levels −128..=127.
    I8,
}

impl QType {
    /// The smallest level.
    pub fn min(self) -> i32 {
        match self {
            QType::U8 => 0,
            QType::I8 => -128,
        }
    }

    /// The largest level.
    pub fn max(self) -> i32 {
        match self {
            QType::U8 => 255,
            QType::I8 => 127,
        }
    }

    /// The 8-bit type of `dtype`, if it is one.
    pub fn of(dtype: DType) -> Option<QType> {
        match dtype {
            DType::U8 => Some(QType::U8),
            DType::I8 => Some(QType::I8),
            _ => None,
        }
    }
}

/// An 8-bit element type (`u8` or `i8`).
pub(crate) trait Q8: Copy + Default + Send + Sync + 'static {
    /// The storage type.
    const QTYPE: QType;
    /// The stored integer as i32.
    fn level(self) -> i32;
    /// The element holding `v`, which the caller has clamped to the type's range.
    fn from_level(v: i32) -> Self;
    /// The elements of `buf` if it holds this type.
    fn slice(buf: &Buf) -> Option<&[Self]>;
    /// Wraps elements into a [`Buf`].
    fn into_buf(v: Vec<Self>) -> Buf;
    /// `v` clamped to the type's range.
    fn saturate(v: i32) -> Self {
        Self::from_level(v.clamp(Self::QTYPE.min(), Self::QTYPE.max()))
    }
}

impl Q8 for u8 {
    const QTYPE: QType = QType::U8;
    fn level(self) -> i32 {
        i32::from(self)
    }
    fn from_level(v: i32) -> Self {
        v as u8
    }
    fn slice(buf: &Buf) -> Option<&[Self]> {
        match buf {
            Buf::U8(v) => Some(v),
            _ => None,
        }
    }
    fn into_buf(v: Vec<Self>) -> Buf {
        Buf::U8(v)
    }
}

impl Q8 for i8 {
    const QTYPE: QType = QType::I8;
    fn level(self) -> i32 {
        i32::from(self)
    }
    fn from_level(v: i32) -> Self {
        v as i8
    }
    fn slice(buf: &Buf) -> Option<&[Self]> {
        match buf {
            Buf::I8(v) => Some(v),
            _ => None,
        }
    }
    fn into_buf(v: Vec<Self>) -> Buf {
        Buf::I8(v)
    }
}

/// Calls the generic function `$f::<T>` with `T` the 8-bit type of `$qtype`.
macro_rules! with_q8 {
    ($qtype:expr, $f:ident ( $($arg:expr),* $(,)? )) => {
        match $qtype {
            $crate::integer::value::QType::U8 => $f::<u8>($($arg),*),
            $crate::integer::value::QType::I8 => $f::<i8>($($arg),*),
        }
    };
}
pub(crate) use with_q8;
