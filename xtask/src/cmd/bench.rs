//! `cargo xtask bench [--peers] [--quick]`: runs the criterion benchmarks
//! (fake quant, convolutions, matcher, one QAT training step) and
//! prints a table; with `--peers`, runs the same work in TensorFlow and
//! PyTorch (installed into venvs under `target/` on first use) in the same
//! run and prints ratios.

use super::workspace_root;
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Also run the peer implementations (TensorFlow, PyTorch) and print ratios.
    #[arg(long)]
    peers: bool,
    /// Shorter measurements (criterion's --quick).
    #[arg(long)]
    quick: bool,
}

/// The fake-quant benchmark's buffer: 16M f32.
const FAKE_QUANT_BYTES: f64 = (16 * 1024 * 1024 * 4) as f64;

fn cargo_bench(package: &str, benches: &[&str], quick: bool) -> Result<()> {
    let mut args = vec!["bench", "--package", package];
    for b in benches {
        args.extend(["--bench", b]);
    }
    args.push("--");
    if quick {
        args.push("--quick");
    }
    eprintln!("==> cargo {}", args.join(" "));
    let status = Command::new(env!("CARGO"))
        .args(&args)
        .current_dir(workspace_root())
        .status()
        .context("running cargo bench")?;
    if !status.success() {
        bail!("cargo bench --package {package} failed");
    }
    Ok(())
}

/// Criterion's median estimate for `group/bench`, in seconds.
fn median(group: &str, bench: &str) -> Option<f64> {
    let path = workspace_root()
        .join("target/criterion")
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["median"]["point_estimate"].as_f64().map(|ns| ns * 1e-9)
}

/// A venv under `target/` with `packages`, created on first use.
fn venv(name: &str, packages: &[&str]) -> Result<PathBuf> {
    let dir = workspace_root().join("target").join(name);
    let python = dir.join("bin/python");
    if !python.exists() {
        eprintln!(
            "==> creating {} with {} (first use; this downloads from PyPI)",
            dir.display(),
            packages.join(", ")
        );
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .context("running python3 -m venv")?
            .success()
            && Command::new(dir.join("bin/pip"))
                .args(["install", "--quiet"])
                .args(packages)
                .status()
                .context("running pip")?
                .success();
        if !ok {
            bail!(
                "could not create {} with {}",
                dir.display(),
                packages.join(", ")
            );
        }
    }
    Ok(python)
}

fn python_json(python: &Path, script: &str, args: &[&str]) -> Result<Value> {
    let out = Command::new(python)
        .arg(workspace_root().join(script))
        .args(args)
        .output()
        .with_context(|| format!("running {script}"))?;
    if !out.status.success() {
        bail!(
            "{script} failed: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
    }
    serde_json::from_slice(&out.stdout).with_context(|| format!("{script} printed no JSON"))
}

fn row(
    label: &str,
    ours: Option<f64>,
    unit: &str,
    peers: &[(&str, Option<f64>)],
    higher_is_better: bool,
) {
    let Some(ours) = ours else {
        println!("  {label:<44} (not measured)");
        return;
    };
    let mut line = format!("  {label:<44} {ours:>9.3} {unit}");
    for (name, value) in peers {
        match value {
            Some(v) => {
                let ratio = if higher_is_better { ours / v } else { v / ours };
                line.push_str(&format!("   {name} {v:>8.3} ({ratio:.2}x)"));
            }
            None => line.push_str(&format!("   {name} -")),
        }
    }
    println!("{line}");
}

/// Runs `bench`.
pub fn run(args: Args) -> Result<()> {
    cargo_bench("quant-kernels", &["fake_quant", "conv"], args.quick)?;
    cargo_bench("quant-core", &["matcher"], args.quick)?;
    cargo_bench("quant-train", &["qat_step"], args.quick)?;

    let (mut tf, mut torch) = (Value::Null, Value::Null);
    let mut torch_conv = Value::Null;
    let mut torch_train = Value::Null;
    if args.peers {
        let tf_python = venv("tf-venv", &["tensorflow-cpu", "numpy"])?;
        tf = python_json(&tf_python, "tools/bench/fake_quant_peers.py", &[])?["tensorflow"].clone();
        let torch_python = venv("torch-venv", &["torch", "numpy"])?;
        torch =
            python_json(&torch_python, "tools/bench/fake_quant_peers.py", &[])?["torch"].clone();
        torch_conv = python_json(&torch_python, "tools/bench/conv_peers.py", &[])?["torch"].clone();
        torch_train =
            python_json(&torch_python, "tools/bench/train_peers.py", &[])?["torch"].clone();
    }
    let gbps = |bench: &str| median("fake_quant_16M", bench).map(|s| FAKE_QUANT_BYTES / s / 1e9);
    let peer = |v: &Value, key: &str| v[key].as_f64();
    let copy = gbps("copy");
    println!("\nfake quant, 16M f32 (GB/s of input; ratio = quant / peer)");
    row("copy (memory-speed baseline)", copy, "GB/s", &[], true);
    for (bench, key) in [
        ("fake_quant_vars", "per_tensor_gbps"),
        ("fake_quant_per_channel_64", "per_channel_gbps"),
        ("fake_quant_vars_grad_fused", "per_tensor_grad_gbps"),
    ] {
        let ours = gbps(bench);
        let vs_copy = ours.zip(copy).map(|(o, c)| o / c);
        let label = format!("{bench} ({:.2}x copy)", vs_copy.unwrap_or(f64::NAN));
        row(
            &label,
            ours,
            "GB/s",
            &[("tensorflow", peer(&tf, key)), ("torch", peer(&torch, key))],
            true,
        );
    }
    println!("\nconvolutions and dense layer, batch 64 (ms; ratio = peer / quant)");
    for group in [
        "conv1_b64_28x28x1_5x5x16",
        "conv2_b64_14x14x16_5x5x32",
        "fc_b64_1568x10",
    ] {
        let fb = if group.starts_with("fc") {
            median(group, "forward")
                .zip(median(group, "backward"))
                .map(|(f, b)| f + b)
        } else {
            median(group, "forward_backward")
        };
        let ms = |s: Option<f64>| s.map(|s| s * 1e3);
        let t = &torch_conv[group];
        row(
            &format!("{group} forward"),
            ms(median(group, "forward")),
            "ms",
            &[("torch", peer(t, "forward_ms"))],
            false,
        );
        row(
            &format!("{group} forward+backward"),
            ms(fb),
            "ms",
            &[("torch", peer(t, "forward_backward_ms"))],
            false,
        );
    }
    println!("\nQAT training step of the MNIST CNN, batch 64 (images/s; ratio = quant / peer)");
    row(
        "mnist_cnn_b64/qat_step",
        median("mnist_cnn_b64", "qat_step").map(|s| 64.0 / s),
        "img/s",
        &[("torch", peer(&torch_train, "images_per_sec"))],
        true,
    );
    println!("\npattern matching (ms for all layers)");
    for n in ["1000", "10000", "100000"] {
        row(
            &format!("match_all_layers/{n}"),
            median("match_all_layers", n).map(|s| s * 1e3),
            "ms",
            &[],
            false,
        );
    }
    Ok(())
}
