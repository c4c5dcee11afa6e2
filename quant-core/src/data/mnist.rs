//! The MNIST data set: loading the four IDX files, and seeded, shuffled
//! batches of it as [`Tensor`]s.
//!
//! Images become f32 tensors `[N, 28, 28, 1]` (NHWC, one channel) with
//! each pixel byte `p` scaled to `p / 255` (an f32 division, so 0 maps to
//! exactly 0.0 and 255 to exactly 1.0); labels become i64 tensors `[N]`,
//! the default label type of `SparseSoftmaxCrossEntropyWithLogits`.
//!
//! ```no_run
//! use quant_core::data::{BatchOptions, Mnist};
//! let mnist = Mnist::load("data/mnist".as_ref()).unwrap();
//! let options = BatchOptions { batch_size: 64, shuffle: true, seed: 1, drop_last: true };
//! for batch in mnist.train.batches(&options, 0).unwrap() {
//!     assert_eq!(batch.images.shape(), &[64, 28, 28, 1]);
//! }
//! ```

use super::DataError;
use super::idx::read_idx;
use crate::models::Rng;
use crate::tensor::Tensor;
use ndarray::{ArrayD, IxDyn};
use std::path::{Path, PathBuf};

/// Image height and width.
pub const SIDE: usize = 28;
/// Pixels per image.
const PIXELS: usize = SIDE * SIDE;

/// One split of MNIST (train or test), held in memory.
#[derive(Clone, Debug)]
pub struct MnistSplit {
    images: Vec<f32>,
    labels: Vec<i64>,
}

/// The MNIST training (60,000 examples) and test (10,000 examples) splits.
#[derive(Clone, Debug)]
pub struct Mnist {
    /// `train-images` and `train-labels`.
    pub train: MnistSplit,
    /// `t10k-images` and `t10k-labels`.
    pub test: MnistSplit,
}

impl Mnist {
    /// Loads the four MNIST files from `dir`.
    ///
    /// Each file is looked up under the original name
    /// (`train-images-idx3-ubyte`) and the dotted variant
    /// (`train-images.idx3-ubyte`), each with and without `.gz`; the first
    /// that exists is read (gzip is detected from the contents).
    pub fn load(dir: &Path) -> Result<Mnist, DataError> {
        Ok(Mnist {
            train: MnistSplit::load(dir, "train")?,
            test: MnistSplit::load(dir, "t10k")?,
        })
    }
}

/// The first existing file among the accepted names of `stem`'s IDX file.
fn find(dir: &Path, stem: &str, kind: &str) -> Result<PathBuf, DataError> {
    let tried: Vec<String> = [format!("{stem}-{kind}"), format!("{stem}.{kind}")]
        .into_iter()
        .flat_map(|name| [format!("{name}.gz"), name])
        .collect();
    tried
        .iter()
        .map(|name| dir.join(name))
        .find(|path| path.is_file())
        .ok_or_else(|| DataError::MissingFile {
            dir: dir.to_path_buf(),
            tried,
        })
}

impl MnistSplit {
    /// Loads `<prefix>-images` and `<prefix>-labels` from `dir`.
    fn load(dir: &Path, prefix: &str) -> Result<MnistSplit, DataError> {
        let images_path = find(dir, &format!("{prefix}-images"), "idx3-ubyte")?;
        let labels_path = find(dir, &format!("{prefix}-labels"), "idx1-ubyte")?;
        MnistSplit::from_files(&images_path, &labels_path)
    }

    /// Loads a split from an image file (rank 3, `[N, 28, 28]`) and a label
    /// file (rank 1, `[N]`, values `0..=9`).
    pub fn from_files(images_path: &Path, labels_path: &Path) -> Result<MnistSplit, DataError> {
        let images = read_idx(images_path)?;
        images.expect_rank(3, images_path)?;
        if images.dims[1..] != [SIDE, SIDE] {
            return Err(DataError::ImageSize {
                path: images_path.to_path_buf(),
                rows: images.dims[1],
                cols: images.dims[2],
            });
        }
        let labels = read_idx(labels_path)?;
        labels.expect_rank(1, labels_path)?;
        if images.dims[0] != labels.dims[0] {
            return Err(DataError::CountMismatch {
                images: images_path.to_path_buf(),
                image_count: images.dims[0],
                labels: labels_path.to_path_buf(),
                label_count: labels.dims[0],
            });
        }
        if let Some((index, &label)) = labels.data.iter().enumerate().find(|(_, l)| **l > 9) {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_path_buf(),
                index,
                label,
            });
        }
        Ok(MnistSplit {
            images: images.data.iter().map(|&p| f32::from(p) / 255.0).collect(),
            labels: labels.data.iter().map(|&l| i64::from(l)).collect(),
        })
    }

    /// The number of examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no examples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// All pixels, example after example, row-major, scaled to `[0, 1]`.
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// All labels.
    pub fn labels(&self) -> &[i64] {
        &self.labels
    }

    /// The first `n` examples (all of them if there are fewer).
    pub fn head(&self, n: usize) -> MnistSplit {
        let n = n.min(self.len());
        MnistSplit {
            images: self.images[..n * PIXELS].to_vec(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// The examples at `indices` (all below [`MnistSplit::len`]), in that
    /// order, as an f32 `[B, 28, 28, 1]` image tensor and an i64 `[B]` label
    /// tensor.
    fn gather(&self, indices: &[usize]) -> Batch {
        let mut images = Vec::with_capacity(indices.len() * PIXELS);
        for &i in indices {
            images.extend_from_slice(&self.images[i * PIXELS..(i + 1) * PIXELS]);
        }
        let labels: Vec<i64> = indices.iter().map(|&i| self.labels[i]).collect();
        let b = indices.len();
        Batch {
            images: Tensor::from_array(
                ArrayD::from_shape_vec(IxDyn(&[b, SIDE, SIDE, 1]), images)
                    .expect("B·28·28 pixels were gathered"),
            ),
            labels: Tensor::from_array(
                ArrayD::from_shape_vec(IxDyn(&[b]), labels).expect("B labels were gathered"),
            ),
        }
    }

    /// The batches of epoch `epoch` (see [`epoch_order`] for the order).
    pub fn batches(&self, options: &BatchOptions, epoch: u64) -> Result<Batches<'_>, DataError> {
        if options.batch_size == 0 {
            return Err(DataError::ZeroBatchSize);
        }
        Ok(Batches {
            split: self,
            order: epoch_order(self.len(), options, epoch),
            next: 0,
            batch_size: options.batch_size,
            drop_last: options.drop_last,
        })
    }
}

/// How a split is cut into batches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    /// Examples per batch (at least 1).
    pub batch_size: usize,
    /// Whether each epoch visits the examples in a seeded random order
    /// (otherwise in file order).
    pub shuffle: bool,
    /// The shuffling seed.
    pub seed: u64,
    /// Whether a last batch smaller than `batch_size` is dropped (otherwise
    /// it is produced as it is).
    pub drop_last: bool,
}

/// The order in which epoch `epoch` visits `len` examples: `0..len`
/// without shuffling, else a permutation that depends only on `seed` and
/// `epoch`.
///
/// The permutation is a Fisher–Yates shuffle driven by quant's SplitMix64
/// generator ([`Rng`]): the generator of epoch `e` is seeded with the
/// `e + 1`-th output of `Rng::new(seed)`, and the swap index for position
/// `i` is `⌊u · (i + 1) / 2⁶⁴⌋` for a fresh 64-bit draw `u` (a
/// multiply-shift, without the bias of a modulo).
pub fn epoch_order(len: usize, options: &BatchOptions, epoch: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if !options.shuffle {
        return order;
    }
    let mut seeds = Rng::new(options.seed);
    let mut epoch_seed = seeds.next_u64();
    for _ in 0..epoch {
        epoch_seed = seeds.next_u64();
    }
    let mut rng = Rng::new(epoch_seed);
    for i in (1..len).rev() {
        let j = ((u128::from(rng.next_u64()) * (i as u128 + 1)) >> 64) as usize;
        order.swap(i, j);
    }
    order
}

/// One batch: images `[B, 28, 28, 1]` f32 in `[0, 1]` and labels `[B]` i64.
#[derive(Clone, Debug)]
pub struct Batch {
    /// The images.
    pub images: Tensor,
    /// The labels.
    pub labels: Tensor,
}

/// The batches of one epoch, in order; see [`MnistSplit::batches`].
#[derive(Clone, Debug)]
pub struct Batches<'a> {
    split: &'a MnistSplit,
    order: Vec<usize>,
    next: usize,
    batch_size: usize,
    drop_last: bool,
}

impl Batches<'_> {
    /// The example order of this epoch.
    pub fn order(&self) -> &[usize] {
        &self.order
    }

    fn remaining(&self) -> usize {
        let left = self.order.len() - self.next;
        if self.drop_last {
            left / self.batch_size
        } else {
            left.div_ceil(self.batch_size)
        }
    }
}

impl Iterator for Batches<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.remaining() == 0 {
            return None;
        }
        let end = (self.next + self.batch_size).min(self.order.len());
        let batch = self.split.gather(&self.order[self.next..end]);
        self.next = end;
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {}
