//! Training data: the IDX file format ([`idx`]) and the MNIST data set
//! ([`mnist`]) with seeded shuffling and batching.
//!
//! Every error is a [`DataError`] naming the file and what is wrong with it.

pub mod idx;
pub mod mnist;

pub use idx::{IdxArray, parse_idx, read_idx};
pub use mnist::{Batch, BatchOptions, Batches, Mnist, MnistSplit, epoch_order};

use std::path::PathBuf;

/// A data file that could not be read, or whose contents are malformed.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file starts with the gzip magic bytes but does not decompress.
    #[error("{path}: corrupt gzip stream: {source}")]
    CorruptGzip {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: std::io::Error,
    },
    /// The first two bytes of an IDX file must be zero.
    #[error("{path}: bad IDX magic {found:02x?}: the first two bytes must be 00 00")]
    BadMagic {
        /// The file.
        path: PathBuf,
        /// The four magic bytes found (fewer if the file is shorter).
        found: Vec<u8>,
    },
    /// The IDX element type code is not one quant reads.
    #[error("{path}: unsupported IDX type code 0x{code:02x}: only 0x08 (unsigned byte) is read")]
    UnsupportedType {
        /// The file.
        path: PathBuf,
        /// The third magic byte.
        code: u8,
    },
    /// The file holds an array of another rank than the one expected.
    #[error("{path}: expected an IDX array of rank {expected}, found rank {found}")]
    RankMismatch {
        /// The file.
        path: PathBuf,
        /// The rank the reader wants.
        expected: usize,
        /// The rank in the header.
        found: usize,
    },
    /// The file ends before the header or the data the dimensions announce.
    #[error("{path}: truncated IDX {part}: expected {expected} bytes, found {found}")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// `"header"` or `"data"`.
        part: &'static str,
        /// Bytes the header says there are (saturated at `u64::MAX`).
        expected: u64,
        /// Bytes present.
        found: u64,
    },
    /// Bytes follow the data the dimensions announce.
    #[error("{path}: {extra} trailing bytes after the IDX data")]
    TrailingBytes {
        /// The file.
        path: PathBuf,
        /// How many bytes are left over.
        extra: u64,
    },
    /// MNIST images must be 28×28.
    #[error("{path}: MNIST images must be 28x28, found {rows}x{cols}")]
    ImageSize {
        /// The image file.
        path: PathBuf,
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
    },
    /// The image and label files of one split disagree on the example count.
    #[error("{images} holds {image_count} images but {labels} holds {label_count} labels")]
    CountMismatch {
        /// The image file.
        images: PathBuf,
        /// Images in it.
        image_count: usize,
        /// The label file.
        labels: PathBuf,
        /// Labels in it.
        label_count: usize,
    },
    /// An MNIST label outside `0..=9`.
    #[error("{path}: label {label} of example {index} is not a digit 0..=9")]
    LabelOutOfRange {
        /// The label file.
        path: PathBuf,
        /// The example.
        index: usize,
        /// The value found.
        label: u8,
    },
    /// None of the accepted names of an MNIST file exists in the directory.
    #[error("{dir}: no MNIST file found among {tried:?}")]
    MissingFile {
        /// The directory searched.
        dir: PathBuf,
        /// The file names tried, in order.
        tried: Vec<String>,
    },
    /// A batch size of zero.
    #[error("the batch size must be at least 1")]
    ZeroBatchSize,
}
