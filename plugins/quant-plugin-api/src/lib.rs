//! # quant-plugin-api
//!
//! The plugin contract of quant: the TOML manifest format (targets and layer
//! patterns as data), the versioned C ABI for dynamically loaded libraries
//! (float, gradient and integer kernels for new op types, custom layer
//! matchers, exporters of the lowered integer model), and the
//! host-side loader that validates manifests, checks the ABI handshake and
//! SHA-256 pins, and registers plugins next to quant's built-ins.
//!
//! ## The manifest
//!
//! ```toml
//! [plugin]
//! name = "tanh-dense"        # unique among loaded plugins
//! version = "0.1.0"
//! abi = 2                    # must be abi::ABI_VERSION
//! # library = "libfoo.so"    # optional, relative to the manifest
//! # sha256 = "…"             # optional pin of the library (64 hex digits)
//!
//! [[target]]                 # a hardware target (quant_passes::target::Target)
//! name = "int4-weights"
//! weight_bits = 4            # 2..=16
//! activation_bits = 8        # 2..=16
//! symmetric_weights = true
//! symmetric_activations = false   # default false
//! per_channel_weights = true
//! narrow_range_weights = true     # default true
//! storage = "int8"                # or "uint8"
//! ops = ["FULLY_CONNECTED"]       # TFLite builtin names, and plugin op types run as CUSTOM ops
//! fused_activations = ["none", "relu", "relu6"]
//! exporter = "none"               # tflite-int8, tflite-uint8, an [[exporter]], or none
//!
//! [[pattern]]                # a layer pattern (quant_passes::patterns)
//! name = "dense-tanh"
//! root = "act"
//! roles = { layer = "dense", weights = "weights", bias = "bias", activation = "act" }
//! [[pattern.node]]
//! name = "weights"
//! op = "Variable|VariableV2|Const"      # alternatives; "*" is any op
//! [[pattern.node]]
//! name = "dense"
//! op = "MatMul"
//! inputs = ["*", "weights"]             # names defined above, "*" = anything
//! [[pattern.node]]
//! name = "bias"
//! op = "Add|AddV2|BiasAdd"
//! inputs = ["dense", "*"]
//! unordered = true
//! [[pattern.node]]
//! name = "act"
//! op = "Tanh"
//! inputs = ["bias"]
//! # a one-of node: { name = "x", one_of = ["a", "b"] }
//!
//! [[op]]                     # an op type the library implements
//! name = "HardSwish"
//! inputs = 1
//! outputs = 1                # default 1
//! shape = "same-as-input0"   # or "unknown"
//!
//! [[matcher]]                # a layer pattern in code, in the library
//! name = "dense-hardswish"
//! description = "..."
//!
//! [[exporter]]               # an exporter the library implements
//! name = "my-format"
//! ```
//!
//! Every table refuses unknown fields. Validation happens before any
//! library is opened: bit widths, op types named by patterns (built in or
//! declared by `[[op]]`), names unique across plugins and against quant's
//! own, the library file exists, is a shared object and matches its pin.
//!
//! ## The library
//!
//! See [`abi`] for the C ABI and [`author`] for the Rust helpers
//! ([`declare_plugin!`]) that catch panics at the boundary. Libraries are
//! never unloaded.
//!
//! ## The host (feature `host`, on by default)
//!
//! [`load_manifest`] loads one plugin, [`load_plugins`] several; a
//! [`Plugins`] holds the targets, layer patterns, op types and kernels of
//! quant and of the loaded plugins, to hand to the rewrite
//! ([`quant_passes::api::experimental_create_eval_graph_with_patterns`]),
//! the executor ([`quant_kernels::session::Session::with_kernels`]), the
//! lowering (targets listing plugin op types), the integer executor
//! ([`quant_kernels::integer::IntExecutor::with_custom_kernels`]) and
//! exporters ([`Plugin::export`], given the lowered model). `docs/plugins.md` walks through writing each kind.

pub mod abi;
pub mod author;
#[cfg(feature = "host")]
pub mod error;
#[cfg(feature = "host")]
pub mod host;
#[cfg(feature = "host")]
pub mod manifest;

#[cfg(feature = "host")]
pub use error::{PluginError, Problem};
#[cfg(feature = "host")]
pub use host::{
    GRAD_SUFFIX, NotExportable, Plugin, Plugins, exporter_for, load_manifest, load_plugins,
};
#[cfg(feature = "host")]
pub use manifest::Manifest;
