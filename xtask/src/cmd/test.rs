//! `cargo xtask test`: the whole test suite, exactly what CI runs.

use super::workspace_root;
use anyhow::{Context, Result, bail};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Instant;

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

/// Runs `cargo test`, echoing its output, and returns the totals of its
/// `test result:` lines as (passed, failed, ignored).
fn tests(args: &[&str]) -> Result<(usize, usize, usize)> {
    eprintln!("==> tests: cargo {}", args.join(" "));
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO"))
        .args(args)
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
    let (passed, failed, ignored) = tests(&["test", "--workspace", "--quiet"])?;
    println!("summary: {passed} passed, {failed} failed, {ignored} skipped");
    if failed > 0 {
        bail!("{failed} tests failed");
    }
    Ok(())
}
