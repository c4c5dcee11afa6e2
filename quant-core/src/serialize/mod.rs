//! Reading and writing graphs and checkpoints.
//!
//! - [`json`]: quant's own graph format, readable and versioned
//!   (`format_version`), with stable field order; a round trip is exact.
//! - [`checkpoint`]: variables by name in safetensors.
//!
//! [`read_graph`] picks the reader from the file extension: `.json`, `.pb`
//! or `.pbtxt`.

pub mod checkpoint;
pub mod json;

use crate::error::IoError;
use crate::graph::Graph;
use crate::import::tf;
use crate::ops::OpRegistry;
use std::path::Path;

/// The graph file formats quant-core reads, by extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GraphFormat {
    /// quant's graph JSON (`.json`).
    Json,
    /// TensorFlow GraphDef, binary protobuf (`.pb`).
    GraphDef,
    /// TensorFlow GraphDef, protobuf text format (`.pbtxt`).
    GraphDefText,
}

impl GraphFormat {
    /// The format for a path's extension, if it is one quant-core reads.
    pub fn from_path(path: &Path) -> Option<GraphFormat> {
        match path.extension()?.to_str()? {
            "json" => Some(GraphFormat::Json),
            "pb" => Some(GraphFormat::GraphDef),
            "pbtxt" => Some(GraphFormat::GraphDefText),
            _ => None,
        }
    }
}

pub(crate) fn read_file(path: &Path) -> Result<Vec<u8>, IoError> {
    std::fs::read(path).map_err(|source| IoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads a graph from a `.json`, `.pb` or `.pbtxt` file, validated against `registry`.
pub fn read_graph(path: &Path, registry: &OpRegistry) -> Result<Graph, IoError> {
    let format = GraphFormat::from_path(path).ok_or_else(|| IoError::Format {
        path: path.to_path_buf(),
        message: "unknown graph format: expected a .json, .pb or .pbtxt file".into(),
    })?;
    let bytes = read_file(path)?;
    match format {
        GraphFormat::Json => {
            let text = std::str::from_utf8(&bytes).map_err(|e| IoError::Format {
                path: path.to_path_buf(),
                message: format!("not UTF-8 text: {e}"),
            })?;
            json::from_json(text, registry).map_err(|e| e.at(path))
        }
        GraphFormat::GraphDef => tf::import_graph_def(&bytes, registry).map_err(|e| e.at(path)),
        GraphFormat::GraphDefText => {
            let text = std::str::from_utf8(&bytes).map_err(|e| IoError::Format {
                path: path.to_path_buf(),
                message: format!("not UTF-8 text: {e}"),
            })?;
            tf::import_graph_def_text(text, registry).map_err(|e| e.at(path))
        }
    }
}

/// Writes a graph as quant's graph JSON.
pub fn write_graph_json(path: &Path, graph: &Graph) -> Result<(), IoError> {
    std::fs::write(path, json::to_json(graph)).map_err(|source| IoError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// A failure while parsing an in-memory graph, before a file path is attached.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The bytes or text are malformed.
    #[error("{0}")]
    Format(String),
    /// The graph they describe is invalid.
    #[error(transparent)]
    Graph(#[from] crate::error::GraphError),
}

impl ParseError {
    /// Attaches the file the graph came from.
    pub fn at(self, path: &Path) -> IoError {
        match self {
            ParseError::Format(message) => IoError::Format {
                path: path.to_path_buf(),
                message,
            },
            ParseError::Graph(source) => IoError::Graph {
                path: path.to_path_buf(),
                source,
            },
        }
    }
}
