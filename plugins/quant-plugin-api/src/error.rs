//! Errors of loading and calling plugins, each naming the manifest at fault.

use std::path::{Path, PathBuf};
use thiserror::Error;

/// A plugin was refused (or failed): the manifest and the problem.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{}: {problem}", manifest.display())]
pub struct PluginError {
    /// The manifest of the plugin at fault.
    pub manifest: PathBuf,
    /// What is wrong.
    pub problem: Problem,
}

impl PluginError {
    /// An error of the plugin whose manifest is `manifest`.
    pub fn new(manifest: &Path, problem: Problem) -> PluginError {
        PluginError {
            manifest: manifest.to_path_buf(),
            problem,
        }
    }
}

/// What is wrong with a plugin.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The manifest cannot be read.
    #[error("cannot read the manifest: {0}")]
    Read(String),
    /// TOML syntax error, unknown field, missing field or wrong type.
    #[error("{}{message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Parse {
        /// The line at fault, when known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
    /// A pattern names an op type that is neither built in nor declared by the plugin.
    #[error(
        "pattern `{pattern}`: node `{node}` uses unknown op type `{op}` (neither built in nor an [[op]] of this plugin)"
    )]
    UnknownOp {
        /// The pattern.
        pattern: String,
        /// Its node.
        node: String,
        /// The unknown op type.
        op: String,
    },
    /// A name another plugin (or quant itself) already registers.
    #[error("{what} `{name}` is already registered by {other}")]
    Duplicate {
        /// `plugin`, `op`, `exporter`, `target` or `pattern`.
        what: &'static str,
        /// The name.
        name: String,
        /// Who has it: another manifest's path, or the built-ins.
        other: String,
    },
    /// The library file is missing, unreadable or not a shared object.
    #[error("library {}: {problem}", path.display())]
    Library {
        /// The library.
        path: PathBuf,
        /// What is wrong.
        problem: String,
    },
    /// The library's SHA-256 is not the pinned one.
    #[error("library {}: SHA-256 mismatch: the manifest pins {expected}, the file has {actual}", path.display())]
    Sha256 {
        /// The library.
        path: PathBuf,
        /// The manifest's pin.
        expected: String,
        /// The file's digest.
        actual: String,
    },
    /// The ABI version is not the host's.
    #[error("ABI version mismatch: {by} says abi = {found}, this quant speaks abi = {expected}")]
    AbiMismatch {
        /// The version found.
        found: u32,
        /// The host's [`crate::abi::ABI_VERSION`].
        expected: u32,
        /// `the manifest` or `the library`.
        by: &'static str,
    },
    /// The library's table does not match the manifest.
    #[error("library table: {0}")]
    Table(String),
    /// A plugin function failed (returned an error or panicked).
    #[error("{function}: {message}")]
    Call {
        /// The function (`op HardSwish forward`, ...).
        function: String,
        /// Its message.
        message: String,
    },
}
