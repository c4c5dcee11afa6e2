//! `cargo xtask run`: runs a graph on the CPU executor.

use crate::npy;
use anyhow::{Context, Result, bail};
use quant_core::serialize::read_graph;
use quant_kernels::integer::IntExecutor;
use quant_kernels::session::Session;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `run`.
#[derive(clap::Args)]
pub struct Args {
    /// The graph: .json, .pb or .pbtxt (float/fake-quant executor), or .tflite (integer executor).
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
    /// Plugin manifest adding op types and their kernels (repeatable).
    #[arg(long = "plugin", value_name = "MANIFEST.toml")]
    plugins: Vec<PathBuf>,
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
    let mut feeds = Vec::new();
    for spec in &args.feeds {
        let Some((name, file)) = spec.split_once('=') else {
            bail!("--feed '{spec}': expected NAME=FILE.npy");
        };
        feeds.push((name.to_string(), npy::read(file.as_ref())?));
    }
    let start = Instant::now();
    let values = if args.graph.extension().is_some_and(|e| e == "tflite") {
        run_tflite(&args, feeds)?
    } else {
        run_graph(&args, feeds)?
    };
    let seconds = start.elapsed().as_secs_f64();
    write_outputs(&args, &values, seconds)
}

/// Runs a quant graph on the float/fake-quant `Session`.
fn run_graph(
    args: &Args,
    feeds: Vec<(String, quant_core::Tensor)>,
) -> Result<Vec<quant_core::Tensor>> {
    let plugins = quant_plugin_api::load_plugins(&args.plugins)
        .map_err(|e| anyhow::anyhow!("--plugin {e}"))?;
    let graph = read_graph(&args.graph, plugins.ops())?;
    let mut session = Session::with_kernels(graph, plugins.kernels().clone())?;
    if let Some(path) = &args.checkpoint {
        session.load(path)?;
    }
    if let Some(step) = args.step {
        session.set_step(step)?;
    }
    let feed_refs: Vec<(&str, quant_core::Tensor)> =
        feeds.iter().map(|(n, t)| (n.as_str(), t.clone())).collect();
    let fetch_refs: Vec<&str> = args.fetches.iter().map(String::as_str).collect();
    Ok(session.run(&feed_refs, &fetch_refs)?)
}

/// Runs a `.tflite` model on the integer executor: every input of the model
/// must be fed (by tensor name), and fetches name output tensors.
fn run_tflite(
    args: &Args,
    mut feeds: Vec<(String, quant_core::Tensor)>,
) -> Result<Vec<quant_core::Tensor>> {
    let label = args.graph.display().to_string();
    if args.checkpoint.is_some() || args.step.is_some() {
        bail!(
            "{label}: --checkpoint and --step apply to graphs, not to .tflite models (their weights are inside)"
        );
    }
    let bytes = std::fs::read(&args.graph).with_context(|| format!("reading {label}"))?;
    let model = quant_tflite::read(&bytes).with_context(|| label.clone())?;
    let names = |indices: &[usize]| -> Vec<String> {
        indices
            .iter()
            .map(|&i| model.tensors[i].name.clone())
            .collect()
    };
    let (input_names, output_names) = (names(&model.inputs), names(&model.outputs));
    let mut inputs = Vec::new();
    for name in &input_names {
        let Some(at) = feeds.iter().position(|(n, _)| n == name) else {
            bail!("{label}: input '{name}' is not fed (--feed {name}=FILE.npy)");
        };
        inputs.push(feeds.swap_remove(at).1);
    }
    if let Some((name, _)) = feeds.first() {
        bail!(
            "{label}: --feed {name}: not an input of the model (inputs: {})",
            input_names.join(", ")
        );
    }
    // CUSTOM ops run with the integer kernels of the loaded plugins.
    let plugins = quant_plugin_api::load_plugins(&args.plugins)
        .map_err(|e| anyhow::anyhow!("--plugin {e}"))?;
    let executor = IntExecutor::with_custom_kernels(
        &model,
        quant_kernels::integer::KernelPath::Fast,
        plugins.integer_kernels(),
    )
    .with_context(|| label.clone())?;
    let values = executor.run(&inputs).with_context(|| label.clone())?;
    args.fetches
        .iter()
        .map(|fetch| {
            output_names
                .iter()
                .position(|n| n == fetch)
                .map(|k| values[k].clone())
                .with_context(|| {
                    format!(
                        "{label}: --fetch {fetch}: not an output of the model (outputs: {})",
                        output_names.join(", ")
                    )
                })
        })
        .collect()
}

/// Writes each fetched value to its `.npy` file and reports them.
fn write_outputs(args: &Args, values: &[quant_core::Tensor], seconds: f64) -> Result<()> {
    std::fs::create_dir_all(&args.output_dir)
        .with_context(|| format!("{}", args.output_dir.display()))?;
    let mut outputs = Vec::new();
    for (fetch, value) in args.fetches.iter().zip(values) {
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
