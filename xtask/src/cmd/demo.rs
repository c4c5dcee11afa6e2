//! `cargo xtask demo`: the main job on built-in defaults.
//!
//! Runs the `train` pipeline with every default (docs/cli.md): the
//! built-in MNIST CNN trained in float on the MNIST copy in `data/mnist`,
//! the training rewrite and quantization-aware fine-tuning, the eval
//! rewrite with the trained ranges, the int8 TFLite export, and the
//! evaluation of the float, fake-quant and integer models on the 10,000
//! test images. Output goes to `target/demo/` (checkpoints, `eval.json`,
//! `model.tflite`, `report.json`), and a short table goes to stdout.

use super::train::{self, Report};
use super::workspace_root;
use anyhow::Result;
use std::path::PathBuf;

/// Arguments of `demo`.
#[derive(clap::Args)]
pub struct Args {
    /// MNIST directory (default: the repository's data/mnist).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory.
    #[arg(long, default_value = "target/demo")]
    out: PathBuf,
}

/// Runs `demo`.
pub fn run(args: Args) -> Result<()> {
    let out = if args.out.is_absolute() {
        args.out
    } else {
        workspace_root().join(args.out)
    };
    let settings = train::Args::defaults(out.clone(), args.data);
    let report = train::pipeline(&settings)?;
    print_table(&report);
    println!("\nwrote {}", out.display());
    Ok(())
}

fn print_table(r: &Report) {
    println!(
        "\n{} on MNIST ({} test images, {} threads, {:.0} s)",
        r.model, r.test_images, r.threads, r.seconds
    );
    println!(
        "{:<22} {:>9} {:>7} {:>10}",
        "graph", "accuracy", "steps", "images/s"
    );
    println!(
        "{:<22} {:>8.2}% {:>7} {:>10.0}",
        "float",
        100.0 * r.float_accuracy,
        r.float_steps,
        r.train_images_per_sec
    );
    println!(
        "{:<22} {:>8.2}% {:>7} {:>10.0}",
        "fake-quant (QAT, eval)",
        100.0 * r.qat_accuracy,
        r.qat_steps,
        r.qat_images_per_sec
    );
    match r.int_accuracy {
        Some(acc) => println!(
            "{:<22} {:>8.2}%          ({}, model.tflite)",
            "integer",
            100.0 * acc,
            r.target
        ),
        None => println!("{:<22} {:>9}", "integer", "-"),
    }
}
