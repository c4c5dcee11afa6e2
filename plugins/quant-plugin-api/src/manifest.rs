//! The TOML manifest: parsing and validation, before any library is opened.
//!
//! The format is documented in the crate docs and in `docs/plugins.md`.

use crate::abi::ABI_VERSION;
use crate::error::{PluginError, Problem};
use quant_core::OpRegistry;
use quant_core::integer::Activation;
use quant_core::matcher::{PatternBuilder, PatternId};
use quant_passes::patterns::{BUILTIN_PATTERNS, LayerPattern, RoleNames};
use quant_passes::target::{Storage, Target, TargetRegistry};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The exporters quant itself provides.
pub const BUILTIN_EXPORTERS: [&str; 2] = ["tflite-int8", "tflite-uint8"];

/// A manifest as written (every table refuses unknown fields).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawManifest {
    /// `[plugin]`.
    pub plugin: PluginSection,
    /// `[[op]]`: op types the library implements.
    #[serde(default)]
    pub op: Vec<OpSection>,
    /// `[[exporter]]`: exporters the library implements.
    #[serde(default)]
    pub exporter: Vec<ExporterSection>,
    /// `[[target]]`: hardware targets.
    #[serde(default)]
    pub target: Vec<TargetSection>,
    /// `[[pattern]]`: layer patterns.
    #[serde(default)]
    pub pattern: Vec<PatternSection>,
    /// `[[matcher]]`: custom layer matchers the library implements.
    #[serde(default)]
    pub matcher: Vec<MatcherSection>,
}

/// `[plugin]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSection {
    /// The plugin's name (unique among loaded plugins).
    pub name: String,
    /// Its version, free text (`0.1.0`).
    pub version: String,
    /// The ABI version it was written for; must be [`ABI_VERSION`].
    pub abi: u32,
    /// The shared library, relative to the manifest's directory.
    pub library: Option<PathBuf>,
    /// The library's SHA-256, 64 hex digits.
    pub sha256: Option<String>,
}

/// How a custom op's output facts are inferred.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ShapeRule {
    /// One output with input 0's dtype and shape.
    SameAsInput0,
    /// Outputs of unknown dtype and shape.
    Unknown,
}

/// `[[op]]`: an op type the library implements.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpSection {
    /// The op type (not a built-in one).
    pub name: String,
    /// The number of data inputs.
    pub inputs: usize,
    /// The number of outputs (default 1).
    #[serde(default = "one")]
    pub outputs: usize,
    /// How the outputs' facts are inferred (default `same-as-input0`).
    #[serde(default = "same_as_input0")]
    pub shape: ShapeRule,
}

fn one() -> usize {
    1
}

fn same_as_input0() -> ShapeRule {
    ShapeRule::SameAsInput0
}

/// `[[exporter]]`: an exporter the library implements.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExporterSection {
    /// The exporter's name (targets name it in `exporter`).
    pub name: String,
}

/// `[[matcher]]`: a custom layer matcher the library implements (a layer
/// pattern in code, registered like a `[[pattern]]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatcherSection {
    /// The pattern name it is registered under (unique among patterns).
    pub name: String,
    /// One line for listings.
    #[serde(default)]
    pub description: String,
}

/// `[[target]]`: a hardware target (see [`Target`]).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetSection {
    /// Registry key.
    pub name: String,
    /// One line for listings.
    #[serde(default)]
    pub description: String,
    /// Bits of the weights, `2..=16`.
    pub weight_bits: u32,
    /// Bits of the activations, `2..=16`.
    pub activation_bits: u32,
    /// Weights have zero point 0.
    pub symmetric_weights: bool,
    /// Activations have zero point 0.
    #[serde(default)]
    pub symmetric_activations: bool,
    /// One scale per output channel.
    pub per_channel_weights: bool,
    /// Weights avoid the lowest level.
    #[serde(default = "yes")]
    pub narrow_range_weights: bool,
    /// `int8` or `uint8`.
    pub storage: StorageName,
    /// The integer ops it runs, by TFLite builtin name, and the plugin op
    /// types it runs as `CUSTOM` ops, by op type.
    #[serde(default)]
    pub ops: Vec<String>,
    /// The fused activations its kernels apply (`none`, `relu`, `relu_n1_to_1`, `relu6`).
    #[serde(default)]
    pub fused_activations: Vec<ActivationName>,
    /// `tflite-int8`, `tflite-uint8`, an `[[exporter]]` of this plugin, or
    /// `none` (the default): nothing can write it.
    pub exporter: Option<String>,
}

fn yes() -> bool {
    true
}

/// A storage type name.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageName {
    /// [`Storage::I8`].
    Int8,
    /// [`Storage::U8`].
    Uint8,
}

/// A fused activation name.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActivationName {
    /// [`Activation::None`].
    None,
    /// [`Activation::Relu`].
    Relu,
    /// [`Activation::ReluN1To1`].
    ReluN1To1,
    /// [`Activation::Relu6`].
    Relu6,
}

/// `[[pattern]]`: a layer pattern.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternSection {
    /// Registry key.
    pub name: String,
    /// One line for listings.
    #[serde(default)]
    pub description: String,
    /// The node tried on every graph node.
    pub root: String,
    /// Which captures play which role.
    pub roles: RolesSection,
    /// The pattern's nodes, each defined before it is used.
    pub node: Vec<NodeSection>,
}

/// `[pattern.roles]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RolesSection {
    /// The layer op (input 1 is the weights).
    pub layer: String,
    /// The op producing the weights.
    pub weights: String,
    /// The op whose output is the activation to quantize.
    pub activation: String,
    /// The bias add.
    pub bias: Option<String>,
    /// The bypass add.
    pub bypass: Option<String>,
}

/// `[[pattern.node]]`: an op pattern (`op`) or a one-of (`one_of`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// The capture name.
    pub name: String,
    /// `*` or `A|B|C`.
    pub op: Option<String>,
    /// Exact inputs: names of nodes defined above, or `*` for any op.
    pub inputs: Option<Vec<String>>,
    /// Match the inputs in any order.
    #[serde(default)]
    pub unordered: bool,
    /// Alternatives, tried in order: names of nodes defined above.
    pub one_of: Option<Vec<String>>,
}

/// A parsed and validated manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// Where it was read from.
    pub path: PathBuf,
    /// The plugin's name.
    pub name: String,
    /// Its version.
    pub version: String,
    /// The library, resolved against the manifest's directory; it exists,
    /// is a shared object and matches `sha256` when given.
    pub library: Option<PathBuf>,
    /// The custom op types.
    pub ops: Vec<OpSection>,
    /// The exporters the library provides.
    pub exporters: Vec<String>,
    /// The targets.
    pub targets: Vec<Target>,
    /// The layer patterns.
    pub patterns: Vec<LayerPattern>,
    /// The custom layer matchers the library provides.
    pub matchers: Vec<MatcherSection>,
}

impl Manifest {
    /// Reads and validates the manifest at `path` without opening its library.
    pub fn from_path(path: &Path) -> Result<Manifest, PluginError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| PluginError::new(path, Problem::Read(e.to_string())))?;
        Manifest::parse(path, &text)
    }

    /// Parses and validates manifest text read from `path`.
    pub fn parse(path: &Path, text: &str) -> Result<Manifest, PluginError> {
        let err = |problem| PluginError::new(path, problem);
        let raw: RawManifest = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1));
            err(Problem::Parse {
                line,
                message: e.message().trim().to_string(),
            })
        })?;
        let p = &raw.plugin;
        if p.name.is_empty() {
            return Err(err(Problem::Invalid("[plugin] name is empty".into())));
        }
        if p.abi != ABI_VERSION {
            return Err(err(Problem::AbiMismatch {
                found: p.abi,
                expected: ABI_VERSION,
                by: "the manifest",
            }));
        }
        let library = match &p.library {
            None => {
                if p.sha256.is_some() {
                    return Err(err(Problem::Invalid(
                        "[plugin] sha256 is given but there is no library".into(),
                    )));
                }
                if let Some(first) = raw.op.first() {
                    return Err(err(Problem::Invalid(format!(
                        "op `{}` needs a library to implement it, and [plugin] has no library",
                        first.name
                    ))));
                }
                if let Some(first) = raw.exporter.first() {
                    return Err(err(Problem::Invalid(format!(
                        "exporter `{}` needs a library to implement it, and [plugin] has no library",
                        first.name
                    ))));
                }
                if let Some(first) = raw.matcher.first() {
                    return Err(err(Problem::Invalid(format!(
                        "matcher `{}` needs a library to implement it, and [plugin] has no library",
                        first.name
                    ))));
                }
                None
            }
            Some(lib) => {
                let dir = path.parent().unwrap_or(Path::new("."));
                let full = dir.join(lib);
                check_library(&full, p.sha256.as_deref()).map_err(err)?;
                Some(full)
            }
        };
        let ops = check_ops(&raw.op).map_err(err)?;
        let exporters =
            check_unique(raw.exporter.iter().map(|e| e.name.as_str()), "exporter").map_err(err)?;
        let targets = raw
            .target
            .iter()
            .map(|t| target(t, &exporters))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        check_unique(targets.iter().map(|t| t.name.as_str()), "target").map_err(err)?;
        let known_ops: BTreeSet<&str> = ops.iter().map(|o| o.name.as_str()).collect();
        let patterns = raw
            .pattern
            .iter()
            .map(|s| pattern(s, &known_ops))
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        for m in &raw.matcher {
            if m.name.is_empty() {
                return Err(err(Problem::Invalid("a matcher name is empty".into())));
            }
            if BUILTIN_PATTERNS.contains(&m.name.as_str()) {
                return Err(err(Problem::Duplicate {
                    what: "pattern",
                    name: m.name.clone(),
                    other: "the built-in patterns".into(),
                }));
            }
        }
        check_unique(
            patterns
                .iter()
                .map(|p| p.name())
                .chain(raw.matcher.iter().map(|m| m.name.as_str())),
            "pattern",
        )
        .map_err(err)?;
        Ok(Manifest {
            path: path.to_path_buf(),
            name: p.name.clone(),
            version: p.version.clone(),
            library,
            ops,
            exporters,
            targets,
            patterns,
            matchers: raw.matcher.clone(),
        })
    }
}

/// The names, refusing repeats within one manifest.
fn check_unique<'a>(
    names: impl Iterator<Item = &'a str>,
    what: &'static str,
) -> Result<Vec<String>, Problem> {
    let mut seen = Vec::new();
    for name in names {
        if seen.iter().any(|s: &String| s == name) {
            return Err(Problem::Duplicate {
                what,
                name: name.to_string(),
                other: "this manifest".into(),
            });
        }
        seen.push(name.to_string());
    }
    Ok(seen)
}

fn check_library(path: &Path, sha256: Option<&str>) -> Result<(), Problem> {
    let bytes = std::fs::read(path).map_err(|e| Problem::Library {
        path: path.to_path_buf(),
        problem: if e.kind() == std::io::ErrorKind::NotFound {
            "the file does not exist".into()
        } else {
            format!("cannot be read: {e}")
        },
    })?;
    // ELF, Mach-O (32/64-bit, both byte orders, universal) and PE.
    const MAGICS: [&[u8]; 7] = [
        b"\x7fELF",
        b"\xfe\xed\xfa\xce",
        b"\xfe\xed\xfa\xcf",
        b"\xce\xfa\xed\xfe",
        b"\xcf\xfa\xed\xfe",
        b"\xca\xfe\xba\xbe",
        b"MZ",
    ];
    if !MAGICS.iter().any(|m| bytes.starts_with(m)) {
        return Err(Problem::Library {
            path: path.to_path_buf(),
            problem: "is not a shared object (no ELF, Mach-O or PE header)".into(),
        });
    }
    if let Some(expected) = sha256 {
        let valid = expected.len() == 64 && expected.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(Problem::Invalid(format!(
                "[plugin] sha256 = \"{expected}\" is not 64 hexadecimal digits"
            )));
        }
        let actual: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if !actual.eq_ignore_ascii_case(expected) {
            return Err(Problem::Sha256 {
                path: path.to_path_buf(),
                expected: expected.to_ascii_lowercase(),
                actual,
            });
        }
    }
    Ok(())
}

fn check_ops(ops: &[OpSection]) -> Result<Vec<OpSection>, Problem> {
    check_unique(ops.iter().map(|o| o.name.as_str()), "op")?;
    for op in ops {
        if op.name.is_empty() || op.name.contains(['|', '*', '/']) {
            return Err(Problem::Invalid(format!(
                "op name `{}` must be non-empty and contain no `|`, `*` or `/`",
                op.name
            )));
        }
        if OpRegistry::builtin().contains(&op.name) {
            return Err(Problem::Duplicate {
                what: "op",
                name: op.name.clone(),
                other: "the built-in ops".into(),
            });
        }
        if op.outputs == 0 {
            return Err(Problem::Invalid(format!(
                "op `{}`: outputs must be at least 1",
                op.name
            )));
        }
        if op.shape == ShapeRule::SameAsInput0 && (op.inputs == 0 || op.outputs != 1) {
            return Err(Problem::Invalid(format!(
                "op `{}`: shape = \"same-as-input0\" needs at least one input and exactly one output",
                op.name
            )));
        }
    }
    Ok(ops.to_vec())
}

fn target(t: &TargetSection, exporters: &[String]) -> Result<Target, Problem> {
    let invalid = |problem: String| Problem::Invalid(format!("target `{}`: {problem}", t.name));
    if t.name.is_empty() {
        return Err(Problem::Invalid("a target name is empty".into()));
    }
    for (which, bits) in [
        ("weight_bits", t.weight_bits),
        ("activation_bits", t.activation_bits),
    ] {
        if !(2..=16).contains(&bits) {
            return Err(invalid(format!(
                "{which} = {bits} is out of range: bit widths must be in 2..=16"
            )));
        }
    }
    let exporter = match t.exporter.as_deref() {
        None | Some("none") => None,
        Some(name) if BUILTIN_EXPORTERS.contains(&name) => {
            if t.weight_bits != 8 || t.activation_bits != 8 {
                return Err(invalid(format!(
                    "exporter `{name}` writes 8-bit weights and activations only, not {}-bit weights and {}-bit activations",
                    t.weight_bits, t.activation_bits
                )));
            }
            Some(name.to_string())
        }
        Some(name) if exporters.iter().any(|e| e == name) => Some(name.to_string()),
        Some(name) => {
            return Err(invalid(format!(
                "exporter `{name}` is unknown: use tflite-int8, tflite-uint8, none, or an [[exporter]] of this plugin"
            )));
        }
    };
    Ok(Target {
        name: t.name.clone(),
        description: t.description.clone(),
        weight_bits: t.weight_bits,
        activation_bits: t.activation_bits,
        symmetric_weights: t.symmetric_weights,
        symmetric_activations: t.symmetric_activations,
        per_channel_weights: t.per_channel_weights,
        narrow_range_weights: t.narrow_range_weights,
        storage: match t.storage {
            StorageName::Int8 => Storage::I8,
            StorageName::Uint8 => Storage::U8,
        },
        ops: t.ops.clone(),
        fused_activations: t
            .fused_activations
            .iter()
            .map(|a| match a {
                ActivationName::None => Activation::None,
                ActivationName::Relu => Activation::Relu,
                ActivationName::ReluN1To1 => Activation::ReluN1To1,
                ActivationName::Relu6 => Activation::Relu6,
            })
            .collect(),
        exporter,
    })
}

fn pattern(s: &PatternSection, plugin_ops: &BTreeSet<&str>) -> Result<LayerPattern, Problem> {
    let invalid = |problem: String| Problem::Invalid(format!("pattern `{}`: {problem}", s.name));
    if BUILTIN_PATTERNS.contains(&s.name.as_str()) {
        return Err(Problem::Duplicate {
            what: "pattern",
            name: s.name.clone(),
            other: "the built-in patterns".into(),
        });
    }
    let mut builder = PatternBuilder::new();
    let mut ids: HashMap<&str, PatternId> = HashMap::new();
    for node in &s.node {
        if node.name.is_empty() || node.name == "*" {
            return Err(invalid(format!(
                "node name `{}` is reserved or empty",
                node.name
            )));
        }
        if ids.contains_key(node.name.as_str()) {
            return Err(invalid(format!("node `{}` is defined twice", node.name)));
        }
        let lookup = |builder: &mut PatternBuilder, name: &str| -> Result<PatternId, Problem> {
            if name == "*" {
                return Ok(builder.any());
            }
            ids.get(name).copied().ok_or_else(|| {
                invalid(format!(
                    "node `{}` refers to `{name}`, which is not defined above it",
                    node.name
                ))
            })
        };
        let id = match (&node.op, &node.one_of) {
            (Some(op), None) => {
                for alternative in op.split('|').filter(|a| *a != "*") {
                    if !OpRegistry::builtin().contains(alternative)
                        && !plugin_ops.contains(alternative)
                    {
                        return Err(Problem::UnknownOp {
                            pattern: s.name.clone(),
                            node: node.name.clone(),
                            op: alternative.to_string(),
                        });
                    }
                }
                let inputs = match &node.inputs {
                    Some(names) => Some(
                        names
                            .iter()
                            .map(|n| lookup(&mut builder, n))
                            .collect::<Result<Vec<_>, _>>()?,
                    ),
                    None => None,
                };
                let mut b = builder.op(op).name(&node.name);
                if let Some(inputs) = inputs {
                    b = b.inputs(inputs);
                }
                if node.unordered {
                    b = b.unordered();
                }
                b.id()
            }
            (None, Some(alternatives)) => {
                if node.inputs.is_some() || node.unordered {
                    return Err(invalid(format!(
                        "node `{}`: a one_of node takes no inputs or unordered",
                        node.name
                    )));
                }
                let alts = alternatives
                    .iter()
                    .map(|n| lookup(&mut builder, n))
                    .collect::<Result<Vec<_>, _>>()?;
                let id = builder.one_of(alts);
                builder.set_name(id, &node.name);
                id
            }
            _ => {
                return Err(invalid(format!(
                    "node `{}` needs exactly one of `op` and `one_of`",
                    node.name
                )));
            }
        };
        ids.insert(&node.name, id);
    }
    let root = *ids
        .get(s.root.as_str())
        .ok_or_else(|| invalid(format!("root `{}` is not a node of the pattern", s.root)))?;
    let built = builder.build(root).map_err(|e| invalid(e.to_string()))?;
    let roles = RoleNames {
        layer: s.roles.layer.clone(),
        weights: s.roles.weights.clone(),
        activation: s.roles.activation.clone(),
        bias: s.roles.bias.clone(),
        bypass: s.roles.bypass.clone(),
    };
    LayerPattern::new(&s.name, &s.description, built, &roles)
        .map_err(|e| Problem::Invalid(e.to_string()))
}

/// Checks that the names `manifests` register are distinct from each
/// other's and from the built-in ones (targets against `builtin_targets`).
pub fn check_distinct(
    manifests: &[Manifest],
    builtin_targets: &TargetRegistry,
) -> Result<(), PluginError> {
    let mut owners: HashMap<(&'static str, &str), &Path> = HashMap::new();
    for m in manifests {
        let names = std::iter::once(("plugin", m.name.as_str()))
            .chain(m.ops.iter().map(|o| ("op", o.name.as_str())))
            .chain(m.exporters.iter().map(|e| ("exporter", e.as_str())))
            .chain(m.targets.iter().map(|t| ("target", t.name.as_str())))
            .chain(m.patterns.iter().map(|p| ("pattern", p.name())))
            .chain(m.matchers.iter().map(|p| ("pattern", p.name.as_str())));
        for (what, name) in names {
            let builtin = match what {
                "target" => builtin_targets.get(name).is_ok(),
                "exporter" => BUILTIN_EXPORTERS.contains(&name),
                _ => false,
            };
            if builtin {
                return Err(PluginError::new(
                    &m.path,
                    Problem::Duplicate {
                        what,
                        name: name.to_string(),
                        other: format!("the built-in {what}s"),
                    },
                ));
            }
            if let Some(other) = owners.insert((what, name), &m.path) {
                return Err(PluginError::new(
                    &m.path,
                    Problem::Duplicate {
                        what,
                        name: name.to_string(),
                        other: other.display().to_string(),
                    },
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "[plugin]\nname = \"p\"\nversion = \"1\"\nabi = 2\n";

    fn problem(body: &str) -> String {
        let text = format!("{HEAD}{body}");
        Manifest::parse(Path::new("m.toml"), &text)
            .unwrap_err()
            .to_string()
    }

    fn pattern(nodes: &str) -> String {
        format!(
            "[[pattern]]\nname = \"x\"\nroot = \"a\"\n\
             roles = {{ layer = \"l\", weights = \"w\", activation = \"a\" }}\n{nodes}"
        )
    }

    #[test]
    fn pattern_nodes_are_checked_with_their_names() {
        assert_eq!(
            problem(&pattern(
                "[[pattern.node]]\nname = \"l\"\nop = \"MatMul\"\ninputs = [\"*\", \"w\"]\n"
            )),
            "m.toml: pattern `x`: node `l` refers to `w`, which is not defined above it"
        );
        assert_eq!(
            problem(&pattern(
                "[[pattern.node]]\nname = \"w\"\nop = \"Const\"\n\
                 [[pattern.node]]\nname = \"a\"\none_of = [\"w\"]\ninputs = [\"w\"]\n"
            )),
            "m.toml: pattern `x`: node `a`: a one_of node takes no inputs or unordered"
        );
        assert_eq!(
            problem(&pattern("[[pattern.node]]\nname = \"w\"\n")),
            "m.toml: pattern `x`: node `w` needs exactly one of `op` and `one_of`"
        );
        assert_eq!(
            problem(&pattern(
                "[[pattern.node]]\nname = \"w\"\nop = \"Const\"\n\
                 [[pattern.node]]\nname = \"a\"\nop = \"Relu\"\ninputs = [\"w\"]\n"
            )),
            "m.toml: pattern `x`: role `layer` names `l`, which is not a named node of the pattern"
        );
    }

    #[test]
    fn a_data_pattern_builds_a_matcher_with_one_of_and_unordered_inputs() {
        let text = format!(
            "{HEAD}{}",
            pattern(
                "[[pattern.node]]\nname = \"v\"\nop = \"Variable\"\n\
                 [[pattern.node]]\nname = \"c\"\nop = \"Const\"\n\
                 [[pattern.node]]\nname = \"w\"\none_of = [\"v\", \"c\"]\n\
                 [[pattern.node]]\nname = \"l\"\nop = \"MatMul\"\ninputs = [\"*\", \"w\"]\n\
                 [[pattern.node]]\nname = \"b\"\nop = \"Add|AddV2\"\ninputs = [\"l\", \"*\"]\nunordered = true\n\
                 [[pattern.node]]\nname = \"a\"\nop = \"Tanh\"\ninputs = [\"b\"]\n"
            )
        );
        let m = Manifest::parse(Path::new("m.toml"), &text).unwrap();
        let p = &m.patterns[0];
        // x → MatMul(x, const) → AddV2(bias, mm) (operands swapped) → Tanh.
        let mut b = quant_core::builder::GraphBuilder::new();
        let x = b
            .placeholder(
                "x",
                quant_core::DType::F32,
                quant_core::Shape::known(&[1, 2]),
            )
            .unwrap();
        let w = b
            .constant(
                "w",
                quant_core::Tensor::from_vec(&[2, 2], vec![1.0f32; 4]).unwrap(),
            )
            .unwrap();
        let bias = b
            .constant(
                "bias",
                quant_core::Tensor::from_vec(&[2], vec![0.0f32; 2]).unwrap(),
            )
            .unwrap();
        let mm = b.matmul("mm", x, w, false, false).unwrap();
        let add = b.binary("AddV2", "add", bias, mm).unwrap();
        b.unary("Tanh", "act", add).unwrap();
        let g = b.finish();
        let matches = p.find(&g).unwrap();
        assert_eq!(matches.len(), 1);
        let name = |id| g.node(id).name().to_string();
        assert_eq!(name(matches[0].layer), "mm");
        assert_eq!(name(matches[0].weights.node), "w");
        assert_eq!(name(matches[0].activation), "act");
    }

    #[test]
    fn ops_and_pins_are_checked() {
        assert_eq!(
            problem("[[op]]\nname = \"HardSwish\"\ninputs = 1\n"),
            "m.toml: op `HardSwish` needs a library to implement it, and [plugin] has no library"
        );
        assert_eq!(
            problem("[[matcher]]\nname = \"m\"\n"),
            "m.toml: matcher `m` needs a library to implement it, and [plugin] has no library"
        );
        assert_eq!(
            problem("sha256 = \"abc\"\n"),
            "m.toml: [plugin] sha256 is given but there is no library"
        );
        let lib = std::env::current_exe().unwrap();
        let text = format!(
            "[plugin]\nname = \"p\"\nversion = \"1\"\nabi = 2\nlibrary = {:?}\nsha256 = \"xyz\"\n",
            lib.display().to_string()
        );
        assert_eq!(
            Manifest::parse(Path::new("/m.toml"), &text)
                .unwrap_err()
                .problem,
            Problem::Invalid("[plugin] sha256 = \"xyz\" is not 64 hexadecimal digits".into())
        );
        let text = format!(
            "[plugin]\nname = \"p\"\nversion = \"1\"\nabi = 2\nlibrary = {:?}\n\
             [[op]]\nname = \"Relu\"\ninputs = 1\n",
            lib.display().to_string()
        );
        assert_eq!(
            Manifest::parse(Path::new("/m.toml"), &text)
                .unwrap_err()
                .to_string(),
            "/m.toml: op `Relu` is already registered by the built-in ops"
        );
        let text = format!(
            "[plugin]\nname = \"p\"\nversion = \"1\"\nabi = 2\nlibrary = {:?}\n\
             [[matcher]]\nname = \"activation\"\n",
            lib.display().to_string()
        );
        assert_eq!(
            Manifest::parse(Path::new("/m.toml"), &text)
                .unwrap_err()
                .to_string(),
            "/m.toml: pattern `activation` is already registered by the built-in patterns"
        );
    }
}
