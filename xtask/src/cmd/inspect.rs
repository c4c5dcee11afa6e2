//! `cargo xtask inspect FILE [--json]`: summarises a graph file, or
//! decodes and lints a `.tflite` model.

use anyhow::{Result, anyhow, bail};
use quant_core::serialize::{GraphFormat, read_graph};
use quant_core::{Graph, OpRegistry};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The graph file: .json (quant), .pb or .pbtxt (TensorFlow GraphDef), or .tflite.
    file: PathBuf,
    /// Print one JSON object on stdout instead of the table.
    #[arg(long)]
    json: bool,
}

/// One graph input or output in the summary.
#[derive(Serialize)]
struct Port {
    name: String,
    op: String,
    fact: String,
}

/// The summary printed by `inspect`.
#[derive(Serialize)]
struct Summary {
    nodes: usize,
    ops: BTreeMap<String, usize>,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    unknown_ops: Vec<String>,
    parameters: usize,
}

fn summarise(graph: &Graph, registry: &OpRegistry) -> Summary {
    let mut ops = BTreeMap::new();
    for (_, node) in graph.nodes() {
        *ops.entry(node.op().to_string()).or_insert(0) += 1;
    }
    let port = |node: &quant_core::Node| Port {
        name: node.name().to_string(),
        op: node.op().to_string(),
        fact: node
            .outputs()
            .first()
            .map(ToString::to_string)
            .unwrap_or_default(),
    };
    let inputs = graph
        .nodes()
        .filter(|(_, n)| n.op() == "Placeholder")
        .map(|(_, n)| port(n))
        .collect();
    let outputs = graph
        .nodes()
        .filter(|(id, n)| {
            !graph.has_consumers(*id)
                && !n.outputs().is_empty()
                && !matches!(n.op(), "Const" | "Variable" | "VariableV2" | "Placeholder")
        })
        .map(|(_, n)| port(n))
        .collect();
    let mut unknown: Vec<String> = graph
        .unknown_ops(registry)
        .into_iter()
        .map(|id| graph.node(id).op().to_string())
        .collect();
    unknown.sort();
    unknown.dedup();
    let parameters = graph
        .nodes()
        .filter(|(_, n)| matches!(n.op(), "Const" | "Variable"))
        .filter_map(|(_, n)| {
            n.attr_tensor("value")
                .or_else(|_| n.attr_tensor("initial_value"))
                .ok()
        })
        .filter(|t| t.dtype().is_float())
        .map(quant_core::Tensor::len)
        .sum();
    Summary {
        nodes: graph.len(),
        ops,
        inputs,
        outputs,
        unknown_ops: unknown,
        parameters,
    }
}

/// Runs `inspect`.
pub fn run(args: Args) -> Result<()> {
    if GraphFormat::from_path(&args.file).is_none() {
        let ext = args.file.extension().and_then(|e| e.to_str()).unwrap_or("");
        if ext == "tflite" {
            return run_tflite(&args);
        }
        bail!(
            "{}: unknown graph format: expected a .json, .pb, .pbtxt or .tflite file",
            args.file.display()
        );
    }
    let registry = OpRegistry::builtin();
    let graph = read_graph(&args.file, registry)?;
    let summary = summarise(&graph, registry);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
        return Ok(());
    }
    println!(
        "{}: {} nodes, {} op types, {} float parameters",
        args.file.display(),
        summary.nodes,
        summary.ops.len(),
        summary.parameters
    );
    for (label, ports) in [("inputs", &summary.inputs), ("outputs", &summary.outputs)] {
        println!("{label}:");
        for p in ports {
            println!("  {:<40} {:<22} {}", p.name, p.op, p.fact);
        }
    }
    println!("ops:");
    for (op, count) in &summary.ops {
        println!("  {op:<40} {count:>6}");
    }
    if !summary.unknown_ops.is_empty() {
        println!(
            "unknown ops (kept as they are, not checked): {}",
            summary.unknown_ops.join(", ")
        );
    }
    Ok(())
}

/// A list of numbers, shortened past four entries.
fn short_list<T: std::fmt::Display>(values: &[T]) -> String {
    let shown: Vec<String> = values.iter().take(4).map(ToString::to_string).collect();
    if values.len() > 4 {
        format!("[{}, ... ({} values)]", shown.join(", "), values.len())
    } else {
        format!("[{}]", shown.join(", "))
    }
}

/// Prints the human form of a `.tflite` inspection.
fn print_tflite(file: &std::path::Path, i: &quant_tflite::inspect::Inspection) {
    let buffer0 = match i.buffer0_bytes {
        Some(0) => "buffer 0 empty".to_string(),
        Some(n) => format!("buffer 0 holds {n} bytes"),
        None => "no buffers".to_string(),
    };
    println!(
        "{}: TFLite ({}) schema {}, {} ops, {} tensors, {} buffers ({buffer0}), {} subgraph(s)",
        file.display(),
        i.identifier,
        i.schema_version,
        i.nodes,
        i.tensors.len(),
        i.buffers,
        i.subgraphs
    );
    if let Some(d) = &i.description {
        println!("description: {d}");
    }
    println!(
        "min_runtime_version: {}",
        i.min_runtime_version.as_deref().unwrap_or("(none)")
    );
    for m in &i.metadata {
        println!(
            "metadata: {} (buffer {}, {} bytes)",
            m.name, m.buffer, m.bytes
        );
    }
    for s in &i.signatures {
        let names = |list: &[quant_tflite::inspect::SignatureTensor]| {
            list.iter()
                .map(|t| format!("{}={}", t.name, t.tensor))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!(
            "signature '{}' (subgraph {}): inputs {}; outputs {}",
            s.key,
            s.subgraph,
            names(&s.inputs),
            names(&s.outputs)
        );
    }
    println!("inputs: {:?}  outputs: {:?}", i.inputs, i.outputs);
    println!(
        "fully integer: {}",
        if i.fully_integer { "yes" } else { "no" }
    );
    println!("operators:");
    for o in &i.operators {
        let options: Vec<String> = o.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  {:>3} {:<20} v{:<2} {:?} -> {:?}  {}",
            o.index,
            o.op,
            o.version,
            o.inputs,
            o.outputs,
            options.join(" ")
        );
    }
    println!("tensors:");
    for t in &i.tensors {
        let quant = if t.scale.is_empty() {
            String::new()
        } else {
            format!(
                "scale {} zero_point {} dim {}",
                short_list(&t.scale),
                short_list(&t.zero_point),
                t.quantized_dimension
            )
        };
        println!(
            "  {:>3} {:<40} {:<5} {:<16} buffer {:>3} ({:>7} B) {quant}",
            t.index,
            t.name,
            t.dtype,
            format!("{:?}", t.shape),
            t.buffer,
            t.buffer_bytes
        );
    }
    if i.lints.is_empty() {
        println!("lints: none");
    } else {
        println!("lints:");
        for l in &i.lints {
            let severity = match l.severity {
                quant_tflite::inspect::Severity::Error => "error",
                quant_tflite::inspect::Severity::Warning => "warning",
            };
            println!("  {severity:<7} {:<26} {}", l.code, l.message);
        }
    }
}

/// Runs `inspect` on a `.tflite` file: prints the decoded model and its
/// lints, then fails (exit 1) if any lint is an error.
fn run_tflite(args: &Args) -> Result<()> {
    let file = &args.file;
    let bytes = std::fs::read(file).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    let inspection =
        quant_tflite::inspect::inspect(&bytes).map_err(|e| anyhow!("{}: {e}", file.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&inspection)?);
    } else {
        print_tflite(file, &inspection);
    }
    let errors = inspection.errors();
    if let Some(first) = inspection
        .lints
        .iter()
        .find(|l| l.severity == quant_tflite::inspect::Severity::Error)
    {
        bail!(
            "{}: {errors} lint error(s); first: [{}] {}",
            file.display(),
            first.code,
            first.message
        );
    }
    Ok(())
}
