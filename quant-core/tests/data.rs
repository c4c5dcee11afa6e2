//! The IDX reader and the MNIST loader against the real MNIST files in
//! `data/mnist/`, every malformed-file error, and the batch order.
//!
//! The constants below were computed from the raw files with Python's
//! `gzip` module, independently of this crate:
//!
//! ```text
//! d = gzip.open("train-images.idx3-ubyte.gz").read()[16:]; sum(d[:784])
//! ```

use flate2::Compression;
use flate2::write::GzEncoder;
use quant_core::data::{
    BatchOptions, DataError, Mnist, MnistSplit, epoch_order, parse_idx, read_idx,
};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

const PIXELS: usize = 28 * 28;

/// `(first ten labels, sum of all labels, byte sum of the first image,
/// non-zero pixels of the first image, byte sum of the last image)`.
const TRAIN: ([i64; 10], i64, u32, usize, u32) =
    ([5, 0, 4, 1, 9, 2, 1, 3, 1, 4], 267_236, 27_525, 166, 20_920);
const TEST: ([i64; 10], i64, u32, usize, u32) =
    ([7, 2, 1, 0, 4, 1, 4, 9, 5, 9], 44_434, 18_454, 116, 41_833);

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist")
}

static MNIST: LazyLock<Mnist> = LazyLock::new(|| Mnist::load(&mnist_dir()).unwrap());

/// The byte values back from the scaled pixels (`p / 255`, so exact).
fn bytes_of(pixels: &[f32]) -> Vec<u32> {
    pixels.iter().map(|&x| (x * 255.0).round() as u32).collect()
}

fn check_split(split: &MnistSplit, n: usize, expected: ([i64; 10], i64, u32, usize, u32)) {
    let (first, label_sum, first_sum, first_nonzero, last_sum) = expected;
    assert_eq!(split.len(), n);
    assert_eq!(split.images().len(), n * PIXELS);
    assert_eq!(split.labels()[..10], first);
    assert_eq!(split.labels().iter().sum::<i64>(), label_sum);
    let first_image = &split.images()[..PIXELS];
    assert_eq!(bytes_of(first_image).iter().sum::<u32>(), first_sum);
    assert_eq!(
        first_image.iter().filter(|&&x| x != 0.0).count(),
        first_nonzero
    );
    let last_image = &split.images()[(n - 1) * PIXELS..];
    assert_eq!(bytes_of(last_image).iter().sum::<u32>(), last_sum);
    // Scaling: p / 255 exactly, so the extremes are 0 and 1 and every value
    // is a byte over 255.
    assert!(split.images().iter().all(|&x| (0.0..=1.0).contains(&x)));
    assert!(split.images().contains(&1.0));
    assert!(
        split
            .images()
            .iter()
            .take(10 * PIXELS)
            .all(|&x| x == ((x * 255.0).round()) / 255.0)
    );
}

#[test]
fn loads_the_real_mnist_files() {
    check_split(&MNIST.train, 60_000, TRAIN);
    check_split(&MNIST.test, 10_000, TEST);
}

#[test]
fn batches_hold_the_examples_in_epoch_order() {
    let test = &MNIST.test;
    let options = BatchOptions {
        batch_size: 1000,
        shuffle: true,
        seed: 7,
        drop_last: false,
    };
    let batches = test.batches(&options, 0).unwrap();
    assert_eq!(batches.len(), 10);
    let order = batches.order().to_vec();
    assert_eq!(order, epoch_order(test.len(), &options, 0));
    let mut seen = 0;
    for batch in batches {
        assert_eq!(batch.images.shape(), &[1000, 28, 28, 1]);
        assert_eq!(batch.labels.shape(), &[1000]);
        let images = batch.images.array::<f32>().unwrap();
        let labels = batch.labels.array::<i64>().unwrap();
        let (images, labels) = (images.as_slice().unwrap(), labels.as_slice().unwrap());
        for (k, &i) in order[seen..seen + 1000].iter().enumerate() {
            assert_eq!(labels[k], test.labels()[i]);
            assert_eq!(
                images[k * PIXELS..(k + 1) * PIXELS],
                test.images()[i * PIXELS..(i + 1) * PIXELS]
            );
        }
        seen += 1000;
    }
    assert_eq!(seen, test.len());
}

#[test]
fn shuffling_is_a_seeded_permutation() {
    let options = |seed| BatchOptions {
        batch_size: 1,
        shuffle: true,
        seed,
        drop_last: false,
    };
    let n = 60_000;
    let a = epoch_order(n, &options(1), 0);
    let mut sorted = a.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..n).collect::<Vec<_>>());
    assert_ne!(a, sorted, "the order is shuffled");
    assert_eq!(a, epoch_order(n, &options(1), 0), "same seed, same order");
    assert_ne!(a, epoch_order(n, &options(2), 0), "another seed");
    let next_epoch = epoch_order(n, &options(1), 1);
    assert_ne!(a, next_epoch, "another epoch");
    assert_eq!(next_epoch, epoch_order(n, &options(1), 1));
    let plain = BatchOptions {
        shuffle: false,
        ..options(1)
    };
    assert_eq!(epoch_order(n, &plain, 3), sorted);
    // Degenerate sizes.
    assert_eq!(epoch_order(0, &options(1), 0), Vec::<usize>::new());
    assert_eq!(epoch_order(1, &options(1), 0), vec![0]);
}

#[test]
fn the_last_partial_batch_is_kept_or_dropped() {
    let test = &MNIST.test;
    let options = |drop_last| BatchOptions {
        batch_size: 3000,
        shuffle: false,
        seed: 0,
        drop_last,
    };
    let kept: Vec<usize> = test
        .batches(&options(false), 0)
        .unwrap()
        .map(|b| b.labels.shape()[0])
        .collect();
    assert_eq!(kept, [3000, 3000, 3000, 1000]);
    let dropped: Vec<usize> = test
        .batches(&options(true), 0)
        .unwrap()
        .map(|b| b.labels.shape()[0])
        .collect();
    assert_eq!(dropped, [3000, 3000, 3000]);
    assert!(matches!(
        test.batches(
            &BatchOptions {
                batch_size: 0,
                ..options(false)
            },
            0
        ),
        Err(DataError::ZeroBatchSize)
    ));
}

/// An IDX file of unsigned bytes: header for `dims`, then `data`.
fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn plain_and_gzip_are_told_apart_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let raw = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);
    // Gzipped contents without a .gz name, plain contents with one.
    let zipped = write(dir.path(), "a.idx", &gzip(&raw));
    let plain = write(dir.path(), "b.gz", &raw);
    for path in [zipped, plain] {
        let array = read_idx(&path).unwrap();
        assert_eq!(array.dims, [2, 3]);
        assert_eq!(array.data, [1, 2, 3, 4, 5, 6]);
    }
    let empty = read_idx(&write(dir.path(), "c", &idx(&[0, 4], &[]))).unwrap();
    assert_eq!((empty.dims, empty.data), (vec![0, 4], vec![]));
}

fn parse(bytes: &[u8]) -> DataError {
    parse_idx(bytes, Path::new("broken.idx")).unwrap_err()
}

#[test]
fn malformed_idx_files_give_their_specific_error() {
    let good = idx(&[2, 3], &[1, 2, 3, 4, 5, 6]);

    let mut bad_magic = good.clone();
    bad_magic[0] = 7;
    let e = parse(&bad_magic);
    assert!(
        matches!(&e, DataError::BadMagic { found, .. } if found == &[7, 0, 8, 2]),
        "{e}"
    );
    assert!(
        e.to_string().starts_with("broken.idx: bad IDX magic"),
        "{e}"
    );
    assert!(matches!(parse(&[0x50]), DataError::BadMagic { .. }));

    let mut float_type = good.clone();
    float_type[2] = 0x0d;
    let e = parse(&float_type);
    assert!(
        matches!(e, DataError::UnsupportedType { code: 0x0d, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("0x0d"), "{e}");

    let e = parse(&good[..good.len() - 2]);
    assert!(
        matches!(
            e,
            DataError::Truncated {
                part: "data",
                expected: 6,
                found: 4,
                ..
            }
        ),
        "{e}"
    );
    let e = parse(&good[..7]);
    assert!(
        matches!(
            e,
            DataError::Truncated {
                part: "header",
                expected: 12,
                found: 7,
                ..
            }
        ),
        "{e}"
    );
    let e = parse(&[0, 0, 8]);
    assert!(
        matches!(e, DataError::Truncated { part: "header", .. }),
        "{e}"
    );
    // Dimensions whose product overflows are truncated data, not a panic.
    let e = parse(&idx(&[u32::MAX, u32::MAX, u32::MAX], &[1]));
    assert!(
        matches!(
            e,
            DataError::Truncated {
                part: "data",
                expected: u64::MAX,
                ..
            }
        ),
        "{e}"
    );

    let mut trailing = good.clone();
    trailing.extend_from_slice(&[9, 9, 9]);
    let e = parse(&trailing);
    assert!(
        matches!(e, DataError::TrailingBytes { extra: 3, .. }),
        "{e}"
    );

    // A gzip stream with a corrupt body, and one cut short.
    let mut garbage = gzip(&good);
    let middle = garbage.len() / 2;
    garbage[12..middle].fill(0xff);
    let e = parse(&garbage);
    assert!(matches!(e, DataError::CorruptGzip { .. }), "{e}");
    assert!(e.to_string().starts_with("broken.idx: corrupt gzip"), "{e}");
    let zipped = gzip(&good);
    let e = parse(&zipped[..zipped.len() - 6]);
    assert!(matches!(e, DataError::CorruptGzip { .. }), "{e}");
    // Truncation inside a well-formed gzip stream is still truncation.
    let e = parse(&gzip(&good[..good.len() - 1]));
    assert!(
        matches!(e, DataError::Truncated { part: "data", .. }),
        "{e}"
    );
}

#[test]
fn malformed_mnist_files_give_their_specific_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let images = write(d, "images", &idx(&[2, 28, 28], &[0; 2 * PIXELS]));
    let labels = write(d, "labels", &idx(&[2], &[3, 9]));
    let split = MnistSplit::from_files(&images, &labels).unwrap();
    assert_eq!(split.labels(), [3, 9]);

    let e = MnistSplit::from_files(&labels, &labels).unwrap_err();
    assert!(
        matches!(&e, DataError::RankMismatch { expected: 3, found: 1, path } if path == &labels),
        "{e}"
    );
    let square = write(d, "square", &idx(&[2, 1], &[3, 9]));
    let e = MnistSplit::from_files(&images, &square).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::RankMismatch {
                expected: 1,
                found: 2,
                ..
            }
        ),
        "{e}"
    );

    let small = write(d, "small", &idx(&[1, 27, 28], &[0; 27 * 28]));
    let e = MnistSplit::from_files(&small, &labels).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::ImageSize {
                rows: 27,
                cols: 28,
                ..
            }
        ),
        "{e}"
    );

    let three = write(d, "three", &idx(&[3], &[1, 2, 3]));
    let e = MnistSplit::from_files(&images, &three).unwrap_err();
    assert!(
        matches!(&e, DataError::CountMismatch { image_count: 2, label_count: 3, images: i, labels: l }
            if i == &images && l == &three),
        "{e}"
    );
    assert!(e.to_string().contains("three"), "{e}");

    let ten = write(d, "ten", &idx(&[2], &[1, 10]));
    let e = MnistSplit::from_files(&images, &ten).unwrap_err();
    assert!(
        matches!(
            e,
            DataError::LabelOutOfRange {
                index: 1,
                label: 10,
                ..
            }
        ),
        "{e}"
    );

    let e = Mnist::load(d).unwrap_err();
    assert!(
        matches!(&e, DataError::MissingFile { tried, .. } if tried.len() == 4),
        "{e}"
    );
    assert!(e.to_string().contains("train-images-idx3-ubyte.gz"), "{e}");

    let e = read_idx(&d.join("absent")).unwrap_err();
    assert!(matches!(e, DataError::Io { .. }), "{e}");
}
