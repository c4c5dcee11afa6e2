//! `cargo xtask export`: lowers an eval-rewritten graph to integer ops and
//! writes a fully-integer TFLite model, or, for a target whose exporter a
//! plugin provides, hands the lowered integer model to that plugin.

use anyhow::{Context, Result, anyhow, bail};
use quant_core::integer::IntOpKind;
use quant_core::serialize::read_graph;
use quant_core::{Graph, OutletId};
use quant_kernels::session::Session;
use quant_passes::lower::{LowerOptions, check_lowering};
use quant_plugin_api::exporter_for;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Arguments of `export`.
#[derive(clap::Args)]
pub struct Args {
    /// The eval graph (.json, .pb or .pbtxt), as written by `rewrite --mode eval` or `train`.
    #[arg(long)]
    graph: PathBuf,
    /// Trained variables (safetensors); default: the variables' initial values.
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// Deployment target (`tflite-int8`, `tflite-uint8`, or one a plugin adds).
    #[arg(long, default_value = "tflite-int8")]
    target: String,
    /// The .tflite file to write.
    #[arg(long)]
    output: PathBuf,
    /// An output node of the model (repeatable); default: the fake quants,
    /// softmaxes and sigmoids nothing consumes (else every node nothing consumes).
    #[arg(long = "output-node", value_name = "NAME")]
    output_nodes: Vec<String>,
    /// The real range of an input that has no fake quant after it, NAME=MIN,MAX
    /// (or MIN,MAX for the only input); repeatable.
    #[arg(long = "input-range", value_name = "NAME=MIN,MAX")]
    input_ranges: Vec<String>,
    /// Integer inputs and outputs instead of QUANTIZE/DEQUANTIZE at the edges.
    #[arg(long)]
    integer_io: bool,
    /// List every tensor without a range and every op the target cannot run, then exit.
    #[arg(long)]
    check: bool,
    /// Plugin manifest adding targets, exporters and op types (repeatable).
    #[arg(long = "plugin", value_name = "MANIFEST.toml")]
    plugins: Vec<PathBuf>,
    /// Print one JSON object describing the export.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Summary {
    output: PathBuf,
    target: String,
    exporter: String,
    bytes: usize,
    ops: Vec<String>,
    tensors: usize,
}

/// Runs `export`.
pub fn run(args: Args) -> Result<()> {
    let plugins =
        quant_plugin_api::load_plugins(&args.plugins).map_err(|e| anyhow!("--plugin {e}"))?;
    let graph = read_graph(&args.graph, plugins.ops())?;
    let target = plugins
        .targets()
        .get(&args.target)
        .with_context(|| format!("--target {}", args.target))?
        .clone();
    let options = lower_options(
        &graph,
        &args.output_nodes,
        &args.input_ranges,
        args.integer_io,
    )?;
    let label = args.graph.display().to_string();
    if args.check {
        let problems = check_lowering(&graph, &target, &options);
        if problems.is_empty() {
            println!("{label}: lowers to {} without problems", target.name);
            return Ok(());
        }
        // docs/cli.md: the `error:` line first, then one context line per problem.
        eprintln!(
            "error: {label}: {} problem(s) prevent lowering to {}",
            problems.len(),
            target.name
        );
        for p in &problems {
            eprintln!("  {p}");
        }
        std::process::exit(1);
    }
    let exporter = exporter_for(&target).map_err(|e| anyhow!("--target {}: {e}", target.name))?;
    // A plugin exporter is looked up before lowering, so a missing plugin
    // is reported first.
    let plugin = if matches!(exporter, "tflite-int8" | "tflite-uint8") {
        None
    } else {
        Some(plugins.exporter_plugin(exporter).with_context(|| {
            format!(
                "--target {}: exporter `{exporter}` is not provided by any loaded plugin",
                target.name
            )
        })?)
    };
    let mut session = Session::with_kernels(graph, plugins.kernels().clone())?;
    if let Some(path) = &args.checkpoint {
        session.load(path)?;
    }
    let model = quant_train::lower_session(&mut session, &target, &options)
        .with_context(|| format!("{label}: lowering to {}", target.name))?;
    let bytes = match plugin {
        // The plugin exporter receives the lowered integer model (as JSON).
        Some(plugin) => {
            let bytes = plugin.export(exporter, &model)?;
            if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            std::fs::write(&args.output, &bytes)
                .with_context(|| format!("writing {}", args.output.display()))?;
            bytes.len()
        }
        None => write_tflite(&model, &args.output)?,
    };
    let summary = Summary {
        output: args.output.clone(),
        target: target.name.clone(),
        exporter: exporter.to_string(),
        bytes,
        ops: model
            .ops
            .iter()
            .map(|op| match &op.kind {
                IntOpKind::Custom { name } => format!("CUSTOM:{name}"),
                kind => kind.tflite_name().to_string(),
            })
            .collect(),
        tensors: model.tensors.len(),
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "{label} -> {} ({}, exporter {}, {} bytes): {}",
            summary.output.display(),
            summary.target,
            summary.exporter,
            summary.bytes,
            summary.ops.join(", ")
        );
    }
    Ok(())
}

/// Serializes `model` to `path`; returns the byte count.
pub fn write_tflite(model: &quant_core::integer::IntModel, path: &Path) -> Result<usize> {
    let bytes = quant_tflite::write(model).context("writing the TFLite flatbuffer")?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(bytes.len())
}

/// The lowering options from the command line: explicit output nodes or
/// every node without consumers, and the input ranges.
pub fn lower_options(
    graph: &Graph,
    output_nodes: &[String],
    input_ranges: &[String],
    integer_io: bool,
) -> Result<LowerOptions> {
    let outputs = if output_nodes.is_empty() {
        sinks(graph)
    } else {
        output_nodes.to_vec()
    };
    let inputs: Vec<String> = graph
        .nodes()
        .filter(|(_, n)| n.op() == "Placeholder")
        .map(|(_, n)| n.name().to_string())
        .collect();
    let mut ranges = Vec::new();
    for spec in input_ranges {
        let (name, range) = match spec.split_once('=') {
            Some((name, range)) => (name.to_string(), range),
            None if inputs.len() == 1 => (inputs[0].clone(), spec.as_str()),
            None => bail!(
                "--input-range {spec}: name the input (NAME=MIN,MAX): the graph has {} inputs",
                inputs.len()
            ),
        };
        let parsed = range.split_once(',').and_then(|(lo, hi)| {
            Some((
                lo.trim().parse::<f32>().ok()?,
                hi.trim().parse::<f32>().ok()?,
            ))
        });
        let Some((lo, hi)) = parsed.filter(|(lo, hi)| lo.is_finite() && hi.is_finite() && lo <= hi)
        else {
            bail!("--input-range {spec}: expected MIN,MAX with MIN <= MAX");
        };
        ranges.push((name, lo, hi));
    }
    Ok(LowerOptions {
        inputs,
        outputs,
        input_ranges: ranges,
        integer_io,
        ..LowerOptions::default()
    })
}

/// The default outputs: the nodes nothing consumes that end in a quantized
/// value (fake quants, softmax, sigmoid), or failing those every node
/// nothing consumes. Variables, constants and inputs never count, nor do
/// the float batch norms an eval rewrite leaves unconsumed.
fn sinks(graph: &Graph) -> Vec<String> {
    let sinks: Vec<&quant_core::Node> = graph
        .nodes()
        .filter(|(id, n)| {
            (0..n.outputs().len()).all(|k| graph.consumers(OutletId::new(*id, k)).is_empty())
                && !matches!(n.op(), "Variable" | "VariableV2" | "Const" | "Placeholder")
        })
        .map(|(_, n)| n)
        .collect();
    let quantized: Vec<String> = sinks
        .iter()
        .filter(|n| n.op().starts_with("FakeQuant") || matches!(n.op(), "Softmax" | "Sigmoid"))
        .map(|n| n.name().to_string())
        .collect();
    if quantized.is_empty() {
        sinks.iter().map(|n| n.name().to_string()).collect()
    } else {
        quantized
    }
}
