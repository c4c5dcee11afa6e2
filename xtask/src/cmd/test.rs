//! `cargo xtask test`: the whole test suite, exactly what CI runs.
//!
//! Before the tests it makes sure `target/litert-venv` (LiteRT's Python
//! interpreter and numpy, from PyPI) exists and imports, and hands its
//! Python to the tests as `QUANT_LITERT_PYTHON`: the LiteRT tests of
//! quant-tflite run exported models in LiteRT's reference kernels through it.

use super::workspace_root;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The venv under `target/` that holds LiteRT.
pub const LITERT_VENV: &str = "litert-venv";

/// What `target/litert-venv` holds. The version is pinned: the integer
/// kernels are tested bit for bit against this release's reference kernels.
pub const LITERT_PACKAGES: &[&str] = &["ai-edge-litert==2.3.0", "numpy"];

/// The environment variable that tells the tests where LiteRT's Python is.
pub const LITERT_PYTHON_ENV: &str = "QUANT_LITERT_PYTHON";

/// Creates `target/litert-venv` if it is missing, checks that it imports
/// LiteRT's interpreter and numpy (installing the packages again once if it
/// does not), and returns its Python.
pub fn litert_python() -> Result<PathBuf> {
    let python = super::bench::venv(LITERT_VENV, LITERT_PACKAGES)?;
    let check = || {
        Command::new(&python)
            .args([
                "-c",
                "import numpy, ai_edge_litert\n\
                 from ai_edge_litert.interpreter import Interpreter, OpResolverType\n\
                 print(getattr(ai_edge_litert, '__version__', '?'), numpy.__version__)",
            ])
            .output()
            .with_context(|| format!("running {}", python.display()))
    };
    let mut out = check()?;
    if !out.status.success() {
        eprintln!(
            "==> {} does not import ai_edge_litert; reinstalling: pip install {}",
            python.display(),
            LITERT_PACKAGES.join(" ")
        );
        super::bench::pip_install(&python, LITERT_PACKAGES)?;
        out = check()?;
        if !out.status.success() {
            bail!(
                "{} cannot import ai_edge_litert: {}",
                python.display(),
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            );
        }
    }
    let versions = String::from_utf8_lossy(&out.stdout);
    let mut versions = versions.split_whitespace();
    eprintln!(
        "==> litert: {} (ai-edge-litert {}, numpy {})",
        python.display(),
        versions.next().unwrap_or("?"),
        versions.next().unwrap_or("?")
    );
    Ok(python)
}

/// Arguments of `test`.
#[derive(clap::Args)]
pub struct Args {
    /// Skip the format and clippy checks (tests only).
    #[arg(long)]
    quick: bool,
}

fn step(name: &str, args: &[&str]) -> Result<()> {
    eprintln!("==> {name}: cargo {}", args.join(" "));
    let start = Instant::now();
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("{name} failed (cargo {})", args.join(" "));
    }
    eprintln!("==> {name}: ok in {:.1}s", start.elapsed().as_secs_f64());
    Ok(())
}

/// Runs `cargo test` with the extra environment `envs`, echoing its
/// output, and returns the totals of its `test result:` lines as (passed,
/// failed, ignored).
fn tests(args: &[&str], envs: &[(&str, PathBuf)]) -> Result<(usize, usize, usize)> {
    for (key, value) in envs {
        eprintln!("==> tests: {key}={}", value.display());
    }
    eprintln!("==> tests: cargo {}", args.join(" "));
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO"))
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let mut totals = (0, 0, 0);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            let line = line.context("reading cargo test output")?;
            println!("{line}");
            if let Some(rest) = line.trim().strip_prefix("test result: ") {
                let count = |label: &str| {
                    rest.split(';')
                        .find_map(|part| {
                            part.trim()
                                .trim_start_matches("ok. ")
                                .trim_start_matches("FAILED. ")
                                .strip_suffix(label)
                        })
                        .and_then(|n| n.trim().parse::<usize>().ok())
                        .unwrap_or(0)
                };
                totals.0 += count(" passed");
                totals.1 += count(" failed");
                totals.2 += count(" ignored");
            }
        }
    }
    let status = child.wait().context("waiting for cargo test")?;
    eprintln!(
        "==> tests: {} in {:.1}s",
        if status.success() { "ok" } else { "FAILED" },
        start.elapsed().as_secs_f64()
    );
    if !status.success() && totals.1 == 0 {
        bail!("cargo test failed before running all tests (see the output above)");
    }
    Ok(totals)
}

/// Runs `test`.
pub fn run(args: Args) -> Result<()> {
    if !args.quick {
        step("format", &["fmt", "--all", "--", "--check"])?;
        step(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--quiet",
                "--",
                "-D",
                "warnings",
            ],
        )?;
    }
    let python = litert_python()?;
    let (passed, failed, ignored) = tests(
        &["test", "--workspace", "--quiet"],
        &[(LITERT_PYTHON_ENV, python)],
    )?;
    println!("summary: {passed} passed, {failed} failed, {ignored} skipped");
    if failed > 0 {
        bail!("{failed} tests failed");
    }
    Ok(())
}
