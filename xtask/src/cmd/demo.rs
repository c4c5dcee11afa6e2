//! `cargo xtask demo`: the main job on built-in defaults.
//!
//! Today the pipeline ends at the eval rewrite: the demo builds each
//! built-in model, validates it, writes it as graph JSON, reads it back and
//! checks the round trip is exact, runs a forward pass of a batch of 64
//! through the executor, applies `create_eval_graph` (batch-norm folding and
//! fake-quant insertion), runs the rewritten graph, and prints a summary.
//! Training and integer export join as they are built.

use super::workspace_root;
use anyhow::{Context, Result, ensure};
use quant_core::models::{self, ModelOptions};
use quant_core::serialize::{read_graph, write_graph_json};
use quant_core::{DType, OpRegistry, Tensor};
use quant_kernels::session::Session;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `demo`.
#[derive(clap::Args)]
pub struct Args {
    /// MNIST directory (used once training is built).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "target/demo")]
    out: PathBuf,
}

/// Runs `demo`.
pub fn run(args: Args) -> Result<()> {
    let _ = args.data;
    let out = if args.out.is_absolute() {
        args.out
    } else {
        workspace_root().join(args.out)
    };
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let registry = OpRegistry::builtin();
    println!(
        "{:<14} {:>6} {:>8} {:>7} {:>10} {:>12} {:>12} {:>12}  file",
        "model",
        "nodes",
        "params",
        "layers",
        "json bytes",
        "forward/64",
        "fake quants",
        "eval fwd/64"
    );
    for name in models::BUILTIN_MODELS {
        let graph = models::builtin(name, ModelOptions::default()).context("built-in model")??;
        graph.validate(registry)?;
        let path = out.join(format!("{name}.json"));
        write_graph_json(&path, &graph)?;
        let back = read_graph(&path, registry)?;
        ensure!(
            back == graph,
            "{}: the JSON round trip changed the graph",
            path.display()
        );
        let layers = graph
            .nodes()
            .filter(|(_, n)| matches!(n.op(), "Conv2D" | "DepthwiseConv2dNative" | "MatMul"))
            .count();
        let params: usize = graph
            .nodes()
            .filter_map(|(_, n)| n.attr_tensor("initial_value").ok())
            .map(|t| t.len())
            .sum();
        let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let ms = forward_ms(name, back)?;
        let mut eval = graph.clone();
        let report = quant_passes::create_eval_graph(&mut eval)?;
        let eval_path = out.join(format!("{name}.eval.json"));
        write_graph_json(&eval_path, &eval)?;
        let eval_ms = forward_ms(name, eval)?;
        println!(
            "{name:<14} {:>6} {params:>8} {layers:>7} {bytes:>10} {ms:>9.1} ms {:>12} {eval_ms:>9.1} ms  {}",
            graph.len(),
            report.quantizers.len(),
            eval_path.display()
        );
    }
    println!("\nGraphs validated, round-tripped through graph JSON, run on the executor, then");
    println!("eval-rewritten (batch norms folded, fake quants inserted) and run again.");
    println!("Not built yet: gradients and training, integer export.");
    Ok(())
}

/// Runs a batch of 64 zero images through `graph` and returns the milliseconds taken.
fn forward_ms(name: &str, graph: quant_core::Graph) -> Result<f64> {
    let mut session = Session::new(graph)?;
    let batch = Tensor::zeros(DType::F32, &[64, 28, 28, 1])?;
    let start = Instant::now();
    let logits = session.run(&[(models::INPUT, batch)], &[models::LOGITS])?;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    ensure!(
        logits[0].shape() == [64, 10],
        "{name}: logits have shape {:?}",
        logits[0].shape()
    );
    Ok(ms)
}
