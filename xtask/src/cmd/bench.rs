//! `cargo xtask bench [--peers] [--quick] [--tflite FILE] [--tflite-only]`:
//! runs the criterion benchmarks (fake quant, convolutions, matcher, the eval
//! rewrite, one QAT training step) and the integer executor on a `.tflite` model, and prints
//! a table; with `--peers`, runs the same work in TensorFlow, PyTorch and
//! LiteRT (installed into venvs under `target/` on first use) in the same
//! run and prints ratios.

use super::workspace_root;
use anyhow::{Context, Result, bail};
use quant_core::integer::{Activation, Hw, IntModel, IntOp, IntOpKind, IntTensor, Padding};
use quant_core::{DType, QuantParams, Tensor};
use quant_kernels::integer::IntExecutor;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Arguments of `bench`.
#[derive(clap::Args)]
pub struct Args {
    /// Also run the peer implementations (TensorFlow, PyTorch, LiteRT) and print ratios.
    #[arg(long)]
    peers: bool,
    /// Shorter measurements (criterion's --quick).
    #[arg(long)]
    quick: bool,
    /// The .tflite model for the integer-inference benchmark (default: the
    /// first .tflite under target/demo/, else a synthetic MNIST-shaped int8
    /// model written to target/bench/).
    #[arg(long, value_name = "FILE")]
    tflite: Option<PathBuf>,
    /// Only the integer-inference benchmark (skip the criterion benchmarks).
    #[arg(long)]
    tflite_only: bool,
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

/// A venv under `target/` with `packages`, created on first use (fast and
/// silent when it exists). Returns its Python.
pub(super) fn venv(name: &str, packages: &[&str]) -> Result<PathBuf> {
    let dir = workspace_root().join("target").join(name);
    let python = dir.join("bin/python");
    if !python.exists() {
        eprintln!(
            "==> creating {} with {} (first use; this downloads from PyPI)",
            dir.display(),
            packages.join(", ")
        );
        eprintln!("==> python3 -m venv {}", dir.display());
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&dir)
            .status()
            .context("running python3 -m venv")?
            .success();
        if !ok {
            bail!("python3 -m venv {} failed", dir.display());
        }
        pip_install(&python, packages)?;
    }
    Ok(python)
}

/// `python -m pip install --quiet packages`, echoing the command.
pub(super) fn pip_install(python: &Path, packages: &[&str]) -> Result<()> {
    eprintln!(
        "==> {} -m pip install --quiet {}",
        python.display(),
        packages.join(" ")
    );
    let ok = Command::new(python)
        .args(["-m", "pip", "install", "--quiet"])
        .args(packages)
        .status()
        .context("running pip")?
        .success();
    if !ok {
        bail!(
            "pip could not install {} into {}",
            packages.join(", "),
            python.display()
        );
    }
    Ok(())
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
    if args.tflite_only {
        return tflite_bench(&args);
    }
    cargo_bench("quant-kernels", &["fake_quant", "conv"], args.quick)?;
    cargo_bench("quant-core", &["matcher"], args.quick)?;
    cargo_bench("quant-passes", &["rewrite"], args.quick)?;
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
    per_network_size("match_all_layers");
    println!("\neval rewrite: batch-norm folding and fake-quant insertion (ms for all layers)");
    per_network_size("eval_rewrite");
    tflite_bench(&args)
}

/// One row per generated network size of a criterion group.
fn per_network_size(group: &str) {
    for n in ["1000", "10000", "100000"] {
        row(
            &format!("{group}/{n}"),
            median(group, n).map(|s| s * 1e3),
            "ms",
            &[],
            false,
        );
    }
}

/// Threads of the integer-inference benchmark, quant and LiteRT alike.
const TFLITE_THREADS: usize = 2;
/// Batch of the throughput measurement.
const TFLITE_BATCH: usize = 256;

/// The integer-inference benchmark: quant's `IntExecutor` and, with
/// `--peers`, LiteRT (XNNPACK and builtin kernels) on the same `.tflite`
/// file with 2 threads: batch-1 latency and batch-256 throughput.
fn tflite_bench(args: &Args) -> Result<()> {
    let path = match &args.tflite {
        Some(p) => p.clone(),
        None => default_tflite()?,
    };
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let model =
        quant_tflite::read(&bytes).with_context(|| format!("reading {}", path.display()))?;
    super::set_threads(Some(TFLITE_THREADS))?;
    let exec = IntExecutor::new(&model).with_context(|| format!("{}", path.display()))?;
    let (runs, batch_runs) = if args.quick { (100, 5) } else { (500, 30) };
    let input = &model.tensors[*model
        .inputs
        .first()
        .with_context(|| format!("{} has no input", path.display()))?];
    let feed = |batch: usize| bench_input(input, batch);
    let one = [feed(1)?];
    let latency = median_seconds(runs, 50, || exec.run(&one).map(drop))?;
    let many = [feed(TFLITE_BATCH)?];
    let per_batch = median_seconds(batch_runs, 2, || exec.run(&many).map(drop))?;

    let mut litert = Value::Null;
    if args.peers {
        let python = super::test::litert_python()?;
        let path_arg = path.to_string_lossy().into_owned();
        litert = python_json(
            &python,
            "tools/bench/litert_peers.py",
            &[
                path_arg.as_str(),
                "--threads",
                &TFLITE_THREADS.to_string(),
                "--batch",
                &TFLITE_BATCH.to_string(),
                "--runs",
                &runs.to_string(),
                "--batch-runs",
                &batch_runs.to_string(),
            ],
        )?["litert"]
            .clone();
        for kind in ["default", "builtin"] {
            if let Some(e) = litert[kind]["error"].as_str() {
                eprintln!("==> LiteRT {kind} could not run {}: {e}", path.display());
            }
        }
    }
    println!(
        "\ninteger inference of {} ({} ops, {TFLITE_THREADS} threads; \
         ratio = peer / quant for latency, quant / peer for throughput)",
        path.display(),
        model.ops.len()
    );
    let peer = |kind: &str, key: &str| litert[kind][key].as_f64();
    row(
        "IntExecutor batch-1 latency",
        Some(latency * 1e3),
        "ms",
        &[
            ("litert-xnnpack", peer("default", "latency_b1_ms")),
            ("litert-builtin", peer("builtin", "latency_b1_ms")),
        ],
        false,
    );
    row(
        &format!("IntExecutor batch-{TFLITE_BATCH} throughput"),
        Some(TFLITE_BATCH as f64 / per_batch),
        "ex/s",
        &[
            ("litert-xnnpack", peer("default", "throughput_per_s")),
            ("litert-builtin", peer("builtin", "throughput_per_s")),
        ],
        true,
    );
    Ok(())
}

/// The median wall time of `runs` calls of `f` after `warmup` untimed ones.
fn median_seconds(
    runs: usize,
    warmup: usize,
    mut f: impl FnMut() -> Result<(), quant_kernels::integer::IntError>,
) -> Result<f64> {
    for _ in 0..warmup {
        f().context("running the integer model")?;
    }
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        f().context("running the integer model")?;
        times.push(start.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// A deterministic input of `batch` examples for a model input: uniform in
/// [0, 1) for a float input (MNIST pixels), uniform over the type for an
/// integer one (with the tensor's parameters).
fn bench_input(input: &IntTensor, batch: usize) -> Result<Tensor> {
    let mut shape = input.shape.clone();
    if shape.is_empty() {
        bail!("input {} is a scalar", input.name);
    }
    shape[0] = batch;
    let n: usize = shape.iter().product();
    let mut rng = Lcg(0x5EED);
    let tensor = match input.dtype {
        DType::F32 => Tensor::from_vec(&shape, (0..n).map(|_| rng.unit()).collect())?,
        DType::U8 => Tensor::from_vec(&shape, (0..n).map(|_| rng.byte()).collect())?,
        DType::I8 => Tensor::from_vec(&shape, (0..n).map(|_| rng.byte() as i8).collect())?,
        other => bail!("input {} is {other:?}; expected f32, u8 or i8", input.name),
    };
    Ok(match &input.quant {
        Some(q) if input.dtype != DType::F32 => tensor.with_quant(q.clone())?,
        _ => tensor,
    })
}

/// A small linear congruential generator (deterministic bench data).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        self.0 >> 33
    }

    fn unit(&mut self) -> f32 {
        (self.next() & 0xFF_FFFF) as f32 / (1u32 << 24) as f32
    }

    fn byte(&mut self) -> u8 {
        (self.next() & 0xFF) as u8
    }

    /// Uniform in `-r..=r`.
    fn within(&mut self, r: i64) -> i64 {
        (self.next() % (2 * r as u64 + 1)) as i64 - r
    }
}

/// The model `cargo xtask demo` exported (the first `.tflite` under
/// `target/demo/`), or else a synthetic one written to
/// `target/bench/mnist-synthetic-int8.tflite`.
fn default_tflite() -> Result<PathBuf> {
    let demo = workspace_root().join("target/demo");
    if let Ok(entries) = std::fs::read_dir(&demo) {
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "tflite"))
            .collect();
        found.sort();
        if let Some(p) = found.into_iter().next() {
            return Ok(p);
        }
    }
    let dir = workspace_root().join("target/bench");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("mnist-synthetic-int8.tflite");
    let bytes = quant_tflite::write(&synthetic_mnist()?).context("writing the synthetic model")?;
    std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
    eprintln!(
        "==> no exported model under {} (run `cargo xtask demo`); using the synthetic {}",
        demo.display(),
        path.display()
    );
    Ok(path)
}

/// An int8 model with the MNIST CNN's shapes and random weights, float I/O:
/// QUANTIZE → conv 5×5×16 + ReLU6 → max pool 2 → conv 5×5×32 + ReLU6 →
/// max pool 2 → reshape [-1, 1568] → fully connected 10 → DEQUANTIZE.
/// Per-channel symmetric weights, per-tensor activations (tflite-export.md §7).
fn synthetic_mnist() -> Result<IntModel> {
    let mut m = IntModel {
        description: "synthetic MNIST-shaped int8 model (random weights) for cargo xtask bench"
            .into(),
        ..IntModel::default()
    };
    let mut rng = Lcg(7);
    let per_tensor = |scale: f32, zero_point: i64| QuantParams {
        scales: vec![scale],
        zero_points: vec![zero_point],
        axis: None,
    };
    let activation = |m: &mut IntModel, name: &str, dtype: DType, shape: &[usize], quant| {
        m.add_tensor(IntTensor {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            quant,
            data: None,
        })
    };
    // A weight tensor ([out, ...], per-channel on `axis`) and its int32 bias.
    let mut layer = |m: &mut IntModel, name: &str, shape: &[usize], s_in: f32| -> Result<_> {
        let out = shape[0];
        let n: usize = shape.iter().product();
        let w: Vec<i8> = (0..n).map(|_| rng.within(127) as i8).collect();
        let scales: Vec<f32> = (0..out).map(|_| 0.002 + 0.002 * rng.unit()).collect();
        let bias: Vec<i32> = (0..out).map(|_| rng.within(2000) as i32).collect();
        let bias_scales: Vec<f32> = scales.iter().map(|s| s * s_in).collect();
        let weights = m.add_tensor(IntTensor {
            name: format!("{name}/weights"),
            dtype: DType::I8,
            shape: shape.to_vec(),
            quant: Some(QuantParams {
                zero_points: vec![0; out],
                scales,
                axis: Some(0),
            }),
            data: Some(Tensor::from_vec(shape, w)?),
        });
        let bias = m.add_tensor(IntTensor {
            name: format!("{name}/bias"),
            dtype: DType::I32,
            shape: vec![out],
            quant: Some(QuantParams {
                zero_points: vec![0; out],
                scales: bias_scales,
                axis: Some(0),
            }),
            data: Some(Tensor::from_vec(&[out], bias)?),
        });
        Ok((weights, bias))
    };
    let s_x = 1.0 / 255.0;
    let s_act = 6.0 / 255.0;
    let x = activation(&mut m, "input", DType::F32, &[1, 28, 28, 1], None);
    let xq = activation(
        &mut m,
        "input/q",
        DType::I8,
        &[1, 28, 28, 1],
        Some(per_tensor(s_x, -128)),
    );
    let (w1, b1) = layer(&mut m, "conv1", &[16, 5, 5, 1], s_x)?;
    let c1 = activation(
        &mut m,
        "conv1",
        DType::I8,
        &[1, 28, 28, 16],
        Some(per_tensor(s_act, -128)),
    );
    let p1 = activation(
        &mut m,
        "pool1",
        DType::I8,
        &[1, 14, 14, 16],
        Some(per_tensor(s_act, -128)),
    );
    let (w2, b2) = layer(&mut m, "conv2", &[32, 5, 5, 16], s_act)?;
    let c2 = activation(
        &mut m,
        "conv2",
        DType::I8,
        &[1, 14, 14, 32],
        Some(per_tensor(s_act, -128)),
    );
    let p2 = activation(
        &mut m,
        "pool2",
        DType::I8,
        &[1, 7, 7, 32],
        Some(per_tensor(s_act, -128)),
    );
    let shape = m.add_tensor(IntTensor {
        name: "flatten/shape".into(),
        dtype: DType::I32,
        shape: vec![2],
        quant: None,
        data: Some(Tensor::from_vec(&[2], vec![-1i32, 1568])?),
    });
    let flat = activation(
        &mut m,
        "flatten",
        DType::I8,
        &[1, 1568],
        Some(per_tensor(s_act, -128)),
    );
    let (w3, b3) = layer(&mut m, "logits", &[10, 1568], s_act)?;
    let logits_q = activation(
        &mut m,
        "logits/q",
        DType::I8,
        &[1, 10],
        Some(per_tensor(0.1, 0)),
    );
    let logits = activation(&mut m, "logits", DType::F32, &[1, 10], None);
    let conv = IntOpKind::Conv2D {
        padding: Padding::Same,
        stride: Hw::ONE,
        dilation: Hw::ONE,
        activation: Activation::Relu6,
    };
    let pool = IntOpKind::MaxPool2D {
        padding: Padding::Valid,
        stride: Hw::new(2, 2),
        filter: Hw::new(2, 2),
        activation: Activation::None,
    };
    let fc = IntOpKind::FullyConnected {
        activation: Activation::None,
        keep_num_dims: false,
    };
    let ops: [(IntOpKind, Vec<usize>, usize); 8] = [
        (IntOpKind::Quantize, vec![x], xq),
        (conv.clone(), vec![xq, w1, b1], c1),
        (pool.clone(), vec![c1], p1),
        (conv, vec![p1, w2, b2], c2),
        (pool, vec![c2], p2),
        (IntOpKind::Reshape, vec![p2, shape], flat),
        (fc, vec![flat, w3, b3], logits_q),
        (IntOpKind::Dequantize, vec![logits_q], logits),
    ];
    for (kind, inputs, output) in ops {
        m.ops.push(IntOp {
            kind,
            inputs: inputs.into_iter().map(Some).collect(),
            outputs: vec![output],
        });
    }
    m.inputs = vec![x];
    m.outputs = vec![logits];
    Ok(m)
}
