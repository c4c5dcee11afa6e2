//! TensorFlow GraphDef import, binary (`.pb`) and text (`.pbtxt`).
//!
//! Ops and attributes map one to one: every `NodeDef` becomes a node with the
//! same name, op type and attributes, so node and op counts are exactly
//! TensorFlow's. Inputs keep their `name`, `name:k` and `^name` meaning.
//! `Const` tensors are decoded from `tensor_content` or from the repeated
//! value fields (where TensorFlow repeats the last value to fill the shape).
//! Not kept: the `device` field, debug info, and function libraries (graphs
//! that define functions are not supported).

mod convert;
mod proto;

pub use proto::tensorflow as protos;

use crate::graph::Graph;
use crate::ops::OpRegistry;
use crate::serialize::ParseError;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};
use std::sync::LazyLock;

/// Imports a binary GraphDef.
pub fn import_graph_def(bytes: &[u8], registry: &OpRegistry) -> Result<Graph, ParseError> {
    let def = protos::GraphDef::decode(bytes)
        .map_err(|e| ParseError::Format(format!("not a valid binary GraphDef: {e}")))?;
    convert::graph_from_def(def, registry)
}

/// The GraphDef message descriptor, decoded once.
static GRAPH_DEF: LazyLock<Result<MessageDescriptor, String>> = LazyLock::new(|| {
    let pool = DescriptorPool::decode(proto::DESCRIPTOR_SET)
        .map_err(|e| format!("internal error: the GraphDef descriptor does not decode: {e}"))?;
    pool.get_message_by_name("tensorflow.GraphDef")
        .ok_or_else(|| "internal error: no GraphDef in the descriptor set".to_string())
});

/// Parses a GraphDef in protobuf text format (without importing it).
pub fn parse_graph_def_text(text: &str) -> Result<protos::GraphDef, ParseError> {
    let descriptor = GRAPH_DEF.clone().map_err(ParseError::Format)?;
    let message = DynamicMessage::parse_text_format(descriptor, text)
        .map_err(|e| ParseError::Format(format!("not a valid text GraphDef: {e}")))?;
    message
        .transcode_to::<protos::GraphDef>()
        .map_err(|e| ParseError::Format(format!("not a valid text GraphDef: {e}")))
}

/// Imports a GraphDef in protobuf text format.
pub fn import_graph_def_text(text: &str, registry: &OpRegistry) -> Result<Graph, ParseError> {
    convert::graph_from_def(parse_graph_def_text(text)?, registry)
}
