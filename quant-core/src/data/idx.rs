//! The IDX file format (the format of the MNIST files), plain or gzipped.
//!
//! An IDX file is a header followed by the array's elements in row-major
//! order:
//!
//! ```text
//! offset  bytes        meaning
//! 0       2            zero
//! 2       1            element type code (0x08 = unsigned byte)
//! 3       1            rank r
//! 4       4·r          the r dimensions, big-endian u32
//! 4+4r    Π dims · 1   the elements
//! ```
//!
//! A file is gzip-compressed when it starts with the gzip magic bytes
//! `1f 8b`, whatever its name; otherwise it is read as plain IDX. Only the
//! unsigned-byte type (0x08) is read; other type codes are refused with
//! [`DataError::UnsupportedType`]. The data must be exactly as long as the
//! dimensions say: fewer bytes is [`DataError::Truncated`], more is
//! [`DataError::TrailingBytes`].

use super::DataError;
use flate2::read::MultiGzDecoder;
use std::io::Read;
use std::path::Path;

/// The gzip magic bytes.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// The IDX type code of unsigned bytes.
const TYPE_U8: u8 = 0x08;

/// An unsigned-byte IDX array: its dimensions and its elements in row-major order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions, outermost first.
    pub dims: Vec<usize>,
    /// The elements, `dims.iter().product()` of them.
    pub data: Vec<u8>,
}

/// Reads the IDX file at `path` (plain or gzipped, see the module docs).
pub fn read_idx(path: &Path) -> Result<IdxArray, DataError> {
    let bytes = std::fs::read(path).map_err(|source| DataError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_idx(&bytes, path)
}

/// Parses the contents of an IDX file, decompressing them first if they
/// start with the gzip magic bytes; `path` only names the file in errors.
pub fn parse_idx(bytes: &[u8], path: &Path) -> Result<IdxArray, DataError> {
    if bytes.starts_with(&GZIP_MAGIC) {
        let mut plain = Vec::new();
        MultiGzDecoder::new(bytes)
            .read_to_end(&mut plain)
            .map_err(|source| DataError::CorruptGzip {
                path: path.to_path_buf(),
                source,
            })?;
        parse_plain(plain, path)
    } else {
        parse_plain(bytes.to_vec(), path)
    }
}

fn parse_plain(mut bytes: Vec<u8>, path: &Path) -> Result<IdxArray, DataError> {
    let truncated = |part, expected: u64, found: usize| DataError::Truncated {
        path: path.to_path_buf(),
        part,
        expected,
        found: found as u64,
    };
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        if bytes.len() >= 2 && (bytes[0], bytes[1]) == (0, 0) {
            return Err(truncated("header", 4, bytes.len()));
        }
        return Err(DataError::BadMagic {
            path: path.to_path_buf(),
            found: bytes.iter().take(4).copied().collect(),
        });
    }
    let (code, rank) = (bytes[2], usize::from(bytes[3]));
    if code != TYPE_U8 {
        return Err(DataError::UnsupportedType {
            path: path.to_path_buf(),
            code,
        });
    }
    let header = 4 + 4 * rank;
    if bytes.len() < header {
        return Err(truncated("header", header as u64, bytes.len()));
    }
    let dims: Vec<usize> = bytes[4..header]
        .chunks_exact(4)
        .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    let found = (bytes.len() - header) as u64;
    if found < expected {
        return Err(truncated("data", expected, bytes.len() - header));
    }
    if found > expected {
        return Err(DataError::TrailingBytes {
            path: path.to_path_buf(),
            extra: found - expected,
        });
    }
    bytes.drain(..header);
    Ok(IdxArray { dims, data: bytes })
}

impl IdxArray {
    /// Checks that the array has rank `expected`; `path` names the file in the error.
    pub fn expect_rank(&self, expected: usize, path: &Path) -> Result<(), DataError> {
        if self.dims.len() == expected {
            Ok(())
        } else {
            Err(DataError::RankMismatch {
                path: path.to_path_buf(),
                expected,
                found: self.dims.len(),
            })
        }
    }
}
