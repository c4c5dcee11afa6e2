//! `cargo xtask inspect FILE [--json]`: summarises a graph file.

use anyhow::{Result, bail};
use quant_core::serialize::{GraphFormat, read_graph};
use quant_core::{Graph, OpRegistry};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Arguments of `inspect`.
#[derive(clap::Args)]
pub struct Args {
    /// The graph file: .json (quant), .pb or .pbtxt (TensorFlow GraphDef).
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
            bail!(
                "{}: reading .tflite files is not supported yet",
                args.file.display()
            );
        }
        bail!(
            "{}: unknown graph format: expected a .json, .pb or .pbtxt file",
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
