//! `cargo xtask rewrite`: applies the training or eval rewrite (batch-norm
//! folding, then fake-quant insertion) through `quant_passes::api`, and
//! writes the result as graph JSON.

use anyhow::{Context, Result, anyhow, bail};
use quant_core::Graph;
use quant_core::models::{self, ModelOptions};
use quant_core::serialize::{read_graph, write_graph_json};
use quant_passes::api::{
    ApiError, EvalOptions, TrainingOptions, experimental_create_eval_graph_with_patterns,
    experimental_create_training_graph_with_patterns,
};
use quant_passes::passes::fold_batch_norms::FOLD_FUSED;
use quant_passes::{ConfigError, PassReport};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;

/// The model rewritten when no `--input` is given.
const DEFAULT_MODEL: &str = "mnist-cnn";

/// Which rewrite to apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Mode {
    /// `create_training_graph`: quantizers that update their ranges.
    Training,
    /// `create_eval_graph`: quantizers that read stored ranges.
    Eval,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Training => "training",
            Mode::Eval => "eval",
        }
    }
}

/// Arguments of `rewrite`.
#[derive(clap::Args)]
pub struct Args {
    /// The graph to rewrite: .json, .pb or .pbtxt (default: the built-in mnist-cnn model).
    #[arg(long)]
    input: Option<PathBuf>,
    /// Where to write the rewritten graph (quant graph JSON, .json).
    #[arg(long, value_name = "FILE.json")]
    output: PathBuf,
    /// The rewrite: training or eval.
    #[arg(long, value_enum)]
    mode: Mode,
    /// Steps before quantization turns on (only 0 is supported yet).
    #[arg(long, value_name = "N")]
    quant_delay: Option<u64>,
    /// Step from which batch norms use moving statistics (training only).
    #[arg(long, value_name = "N")]
    freeze_bn_delay: Option<u64>,
    /// Bits of the weight quantizers, 2..=16.
    #[arg(long, value_name = "B", default_value_t = 8, conflicts_with = "target")]
    weight_bits: u32,
    /// Bits of the activation quantizers, 2..=16.
    #[arg(long, value_name = "B", default_value_t = 8, conflicts_with = "target")]
    activation_bits: u32,
    /// Symmetric training-time ranges.
    #[arg(long, conflicts_with = "target")]
    symmetric: bool,
    /// Per-channel weight quantizers (output-channel axis).
    #[arg(long, conflicts_with = "target")]
    per_channel: bool,
    /// Only quantize ops under this name scope ('/' is appended if missing).
    #[arg(long, value_name = "PREFIX")]
    scope: Option<String>,
    /// Hardware target (built in, or from a --plugin): its bits, symmetry and
    /// per-channel setting replace --weight-bits, --activation-bits,
    /// --symmetric and --per-channel, which cannot be combined with it.
    #[arg(long, value_name = "NAME")]
    target: Option<String>,
    /// Plugin manifest adding targets, layer patterns and op types (repeatable).
    #[arg(long = "plugin", value_name = "MANIFEST.toml")]
    plugins: Vec<PathBuf>,
    /// Print one JSON object summarising the rewrite on stdout.
    #[arg(long)]
    json: bool,
}

/// One inserted fake quant in the summary.
#[derive(Serialize)]
struct FakeQuant {
    name: String,
    role: &'static str,
    bits: u32,
    narrow_range: bool,
    symmetric: bool,
    per_channel: bool,
}

/// The `--json` summary of docs/cli.md.
#[derive(Serialize)]
struct Summary {
    nodes_before: usize,
    nodes_after: usize,
    folded_batch_norms: usize,
    fake_quants: Vec<FakeQuant>,
}

fn summarise(before: usize, after: &Graph, report: &PassReport) -> Summary {
    Summary {
        nodes_before: before,
        nodes_after: after.len(),
        folded_batch_norms: report.count(FOLD_FUSED),
        fake_quants: report
            .quantizers
            .iter()
            .map(|q| FakeQuant {
                name: q.node.clone(),
                role: q.role.as_str(),
                bits: q.num_bits,
                narrow_range: q.narrow_range,
                symmetric: q.symmetric,
                per_channel: q.per_channel,
            })
            .collect(),
    }
}

fn delay(flag: &str, value: Option<u64>) -> Result<Option<i64>> {
    value
        .map(|v| i64::try_from(v).map_err(|_| anyhow!("{flag} {v}: too large")))
        .transpose()
}

/// The API error on one line, prefixed with the flag or file at fault.
fn explain(err: ApiError, input: &str) -> anyhow::Error {
    let flag = match &err {
        ApiError::Config(ConfigError::Bits { which, .. }) => {
            if *which == "weight_bits" {
                "--weight-bits"
            } else {
                "--activation-bits"
            }
        }
        ApiError::Config(ConfigError::FreezeWithoutTraining(_)) => "--freeze-bn-delay",
        ApiError::Config(ConfigError::NegativeDelay { which, .. }) => {
            if *which == "quant_delay" {
                "--quant-delay"
            } else {
                "--freeze-bn-delay"
            }
        }
        ApiError::ScopeMatchesNothing { .. } => "--scope",
        _ => input,
    };
    anyhow!("{flag}: {err}")
}

/// Runs `rewrite`.
pub fn run(args: Args) -> Result<()> {
    let plugins =
        quant_plugin_api::load_plugins(&args.plugins).map_err(|e| anyhow!("--plugin {e}"))?;
    let target = args
        .target
        .as_deref()
        .map(|name| plugins.targets().get(name))
        .transpose()
        .map_err(|e| anyhow!("--target: {e}"))?;
    let patterns = Arc::new(plugins.patterns().clone());
    if args.output.extension().is_none_or(|e| e != "json") {
        bail!(
            "--output {}: the rewritten graph is written as quant graph JSON: use a .json file",
            args.output.display()
        );
    }
    let quant_delay = delay("--quant-delay", args.quant_delay)?;
    let freeze_bn_delay = delay("--freeze-bn-delay", args.freeze_bn_delay)?;

    let (mut graph, label) = match &args.input {
        Some(path) => (read_graph(path, plugins.ops())?, path.display().to_string()),
        None => (
            models::builtin(
                DEFAULT_MODEL,
                ModelOptions {
                    training: matches!(args.mode, Mode::Training),
                    ..ModelOptions::default()
                },
            )
            .context("the built-in model is missing")?
            .with_context(|| format!("building the built-in model {DEFAULT_MODEL}"))?,
            format!("built-in model {DEFAULT_MODEL}"),
        ),
    };
    let before = graph.len();
    let report = match args.mode {
        Mode::Training => {
            let mut options = TrainingOptions {
                weight_bits: args.weight_bits,
                activation_bits: args.activation_bits,
                symmetric: args.symmetric,
                symmetric_weights: false,
                quant_delay: quant_delay.unwrap_or(0),
                freeze_bn_delay,
                scope: args.scope.clone(),
                per_channel: args.per_channel,
            };
            if let Some(t) = target {
                options = TrainingOptions {
                    quant_delay: options.quant_delay,
                    freeze_bn_delay: options.freeze_bn_delay,
                    scope: options.scope,
                    ..t.training_options()
                };
            }
            experimental_create_training_graph_with_patterns(&mut graph, &options, patterns)
        }
        Mode::Eval => {
            let mut options = EvalOptions {
                weight_bits: args.weight_bits,
                activation_bits: args.activation_bits,
                symmetric: args.symmetric,
                symmetric_weights: false,
                quant_delay,
                freeze_bn_delay,
                scope: args.scope.clone(),
                per_channel: args.per_channel,
            };
            if let Some(t) = target {
                options = EvalOptions {
                    quant_delay: options.quant_delay,
                    freeze_bn_delay: options.freeze_bn_delay,
                    scope: options.scope,
                    ..t.eval_options()
                };
            }
            experimental_create_eval_graph_with_patterns(&mut graph, &options, patterns)
        }
    }
    .map_err(|e| explain(e, &label))?;
    write_graph_json(&args.output, &graph)?;

    let summary = summarise(before, &graph, &report);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{label}: {} rewrite: {} -> {} nodes, {} batch norms folded, {} fake quants",
        args.mode.as_str(),
        summary.nodes_before,
        summary.nodes_after,
        summary.folded_batch_norms,
        summary.fake_quants.len()
    );
    for q in &summary.fake_quants {
        let mut flags = Vec::new();
        for (set, name) in [
            (q.narrow_range, "narrow_range"),
            (q.symmetric, "symmetric"),
            (q.per_channel, "per_channel"),
        ] {
            if set {
                flags.push(name);
            }
        }
        println!(
            "  {:<56} {:<24} {:>2} bits {}",
            q.name,
            q.role,
            q.bits,
            flags.join(" ")
        );
    }
    println!("wrote {}", args.output.display());
    Ok(())
}
