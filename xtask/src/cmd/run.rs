//! `cargo xtask run`: runs a graph on the CPU executor.

use crate::npy;
use anyhow::{Context, Result, bail};
use quant_core::OpRegistry;
use quant_core::serialize::read_graph;
use quant_kernels::session::Session;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `run`.
#[derive(clap::Args)]
pub struct Args {
    /// The graph: .json, .pb or .pbtxt.
    #[arg(long)]
    graph: PathBuf,
    /// Variables to load (safetensors).
    #[arg(long)]
    checkpoint: Option<PathBuf>,
    /// A feed, NAME=FILE.npy (repeatable).
    #[arg(long = "feed", value_name = "NAME=FILE.npy")]
    feeds: Vec<String>,
    /// An output to fetch: NAME (output 0) or NAME:K (repeatable).
    #[arg(long = "fetch", value_name = "NAME", required = true)]
    fetches: Vec<String>,
    /// Where to write the fetched tensors.
    #[arg(long, default_value = ".")]
    output_dir: PathBuf,
    /// The quantization step (decides whether quant_delay has passed).
    #[arg(long)]
    step: Option<i64>,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object describing the outputs.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Output {
    name: String,
    file: PathBuf,
    dtype: String,
    shape: Vec<usize>,
}

/// The file name for a fetched output: '/' and ':' become "__".
pub fn output_file_name(fetch: &str) -> String {
    format!("{}.npy", fetch.replace(['/', ':'], "__"))
}

/// Runs `run`.
pub fn run(args: Args) -> Result<()> {
    super::set_threads(args.threads)?;
    if args.graph.extension().is_some_and(|e| e == "tflite") {
        bail!(
            "{}: running .tflite files is not supported yet",
            args.graph.display()
        );
    }
    let graph = read_graph(&args.graph, OpRegistry::builtin())?;
    let mut session = Session::new(graph)?;
    if let Some(path) = &args.checkpoint {
        session.load(path)?;
    }
    if let Some(step) = args.step {
        session.set_step(step)?;
    }
    let mut feeds = Vec::new();
    for spec in &args.feeds {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--feed '{spec}': expected NAME=FILE.npy");
        };
        feeds.push((name.to_string(), npy::read(file.as_ref())?));
    }
    let feed_refs: Vec<(&str, quant_core::Tensor)> =
        feeds.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let fetch_refs: Vec<&str> = args.fetches.iter().map(String::as_str).collect();
    let start = Instant::now();
    let values = session.run(&feed_refs, &fetch_refs)?;
    let seconds = start.elapsed().as_secs_f64();
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("{}", args.output_dir.display()))?;
    let mut outputs = Vec::new();
    for (fetch, value) in args.fetches.iter().zip(&values) {
        let file = args.output_dir.join(output_file_name(fetch));
        npy::write(&file, value)?;
        outputs.push(Output {
            name: fetch.clone(),
            file,
            dtype: value.dtype().to_string(),
            shape: value.shape().to_vec(),
        });
    }
    if args.json {
        println!(
            "{}",
            serde_json::json!({ "outputs": outputs, "seconds": seconds })
        );
    } else {
        for o in &outputs {
            println!(
                "{} {}{:?} -> {}",
                o.name,
                o.dtype,
                o.shape,
                o.file.display()
            );
        }
    }
    Ok(())
}
