//! Element types of tensors and graph wires.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The element type of a tensor or of a node output.
///
/// The first seven variants can hold tensor data; `String` and `Resource`
/// exist so that imported TensorFlow graphs that mention them (placeholders of
/// strings, resource-variable handles) can be represented and round-tripped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary64.
    F64,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Signed 8-bit integer.
    I8,
    /// Boolean.
    Bool,
    /// Byte string (no tensor data support).
    String,
    /// Resource handle (no tensor data support).
    Resource,
}

impl DType {
    /// Every dtype, in declaration order.
    pub const ALL: [DType; 9] = [
        DType::F32,
        DType::F64,
        DType::I32,
        DType::I64,
        DType::U8,
        DType::I8,
        DType::Bool,
        DType::String,
        DType::Resource,
    ];

    /// The short lowercase name used in JSON and in dumps (`f32`, `u8`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::I32 => "i32",
            DType::I64 => "i64",
            DType::U8 => "u8",
            DType::I8 => "i8",
            DType::Bool => "bool",
            DType::String => "string",
            DType::Resource => "resource",
        }
    }

    /// Size of one element in bytes, for dtypes that can hold tensor data.
    pub fn size_of(self) -> Option<usize> {
        match self {
            DType::F32 | DType::I32 => Some(4),
            DType::F64 | DType::I64 => Some(8),
            DType::U8 | DType::I8 | DType::Bool => Some(1),
            DType::String | DType::Resource => None,
        }
    }

    /// Whether this is a floating-point type.
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64)
    }

    /// TensorFlow's `DataType` enum value for this dtype.
    pub fn tf_code(self) -> i32 {
        match self {
            DType::F32 => 1,
            DType::F64 => 2,
            DType::I32 => 3,
            DType::U8 => 4,
            DType::I8 => 6,
            DType::String => 7,
            DType::I64 => 9,
            DType::Bool => 10,
            DType::Resource => 20,
        }
    }

    /// The dtype for a TensorFlow `DataType` enum value. Reference types
    /// (`DT_FLOAT_REF` = 101, ...) map to their value type.
    pub fn from_tf_code(code: i32) -> Option<DType> {
        let code = if code > 100 { code - 100 } else { code };
        DType::ALL.into_iter().find(|d| d.tf_code() == code)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tf_codes_round_trip_and_refs_map_to_values() {
        for d in DType::ALL {
            assert_eq!(DType::from_tf_code(d.tf_code()), Some(d));
        }
        assert_eq!(DType::from_tf_code(101), Some(DType::F32));
        assert_eq!(DType::from_tf_code(19), None, "half is not supported");
    }
}
