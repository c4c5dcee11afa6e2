//! `cargo xtask`: quant's command line.
//!
//! The contract (names, flags, formats, exit codes) is in `docs/cli.md`:
//! exit 0 on success, 2 on a usage error, 1 on any other error, with one
//! `error:` line on stderr naming the file, node, field or flag at fault.

mod cmd;
mod npy;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

// Rewrites allocate millions of small objects (node names, attribute maps,
// shapes), which mimalloc serves faster than glibc's malloc; the rewrite
// benchmark runs under the same allocator and settings. Plugins never free
// what the host allocated (nor the reverse), so they may use any allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option (its index in `mi_option_t`, the same in
/// mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory the process frees for reuse instead of returning it to the
/// OS a second later. A command's peak memory is its footprint anyway, and
/// memory returned and then allocated again comes back as fresh pages the
/// kernel must zero: in a 100k-layer rewrite that was a fifth of the time.
fn keep_freed_memory() {
    // SAFETY: sets a plain integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "quant: quantization-aware training and integer-only deployment",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Summarise a graph (.json, .pb, .pbtxt) or decode and lint a TFLite model (.tflite).
    Inspect(cmd::inspect::Args),
    /// Apply the training or eval rewrite (batch-norm folding, then fake-quant insertion).
    Rewrite(cmd::rewrite::Args),
    /// Run a graph (float/fake-quant executor) or a .tflite model (integer executor) on .npy feeds.
    Run(cmd::run::Args),
    /// Lower an eval graph to integer ops and write a fully-integer TFLite model.
    Export(cmd::export::Args),
    /// Train the built-in MNIST CNN: float, then quantization-aware, then export and evaluate.
    Train(cmd::train::Args),
    /// Run the main job on the built-in defaults.
    Demo(cmd::demo::Args),
    /// Run the benchmarks; with --peers, also TensorFlow, PyTorch and LiteRT on the same work.
    Bench(cmd::bench::Args),
    /// Run the whole test suite, exactly as CI does.
    Test(cmd::test::Args),
    /// Regenerate committed generated code (GraphDef protobuf, TFLite flatbuffers), or check it is fresh.
    Codegen(cmd::codegen::Args),
    /// List the registered targets, layer patterns, op types and exporters (with --plugin, a plugin's too).
    Plugins(cmd::plugins::Args),
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Inspect(args) => cmd::inspect::run(args),
        Command::Rewrite(args) => cmd::rewrite::run(args),
        Command::Run(args) => cmd::run::run(args),
        Command::Export(args) => cmd::export::run(args),
        Command::Train(args) => cmd::train::run(args),
        Command::Demo(args) => cmd::demo::run(args),
        Command::Bench(args) => cmd::bench::run(args),
        Command::Test(args) => cmd::test::run(args),
        Command::Codegen(args) => cmd::codegen::run(args),
        Command::Plugins(args) => cmd::plugins::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", one_line(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, skipping causes whose text the
/// message already contains (library errors embed their source).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line = format!("{line}: {text}");
        }
    }
    line
}
