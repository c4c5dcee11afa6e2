//! The generated GraphDef messages (see `proto/tensorflow_graph.proto`).

/// Messages of TensorFlow's `tensorflow` protobuf package (the subset quant reads).
#[rustfmt::skip]
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod tensorflow {
    include!("generated/tensorflow.rs");
}

/// The encoded `FileDescriptorSet` of the same messages, for the text-format parser.
pub(super) const DESCRIPTOR_SET: &[u8] = include_bytes!("generated/tensorflow.desc");
