//! `cargo xtask train`: float training, quantization-aware fine-tuning, the
//! eval rewrite with the trained ranges, and evaluation on the test set.
//!
//! Phases (docs/cli.md):
//!
//! 1. **float**: the built-in model with training-mode batch norms, a
//!    cross-entropy head, gradients and the optimizer, trained for
//!    `--epochs`; the variables go to `OUT/float.safetensors`.
//! 2. **qat**: the same model through `create_training_graph` (batch norms
//!    folded in training form, fake quants), restored from the float
//!    checkpoint and fine-tuned for `--qat-epochs` at a tenth of the
//!    learning rate; `OUT/qat.safetensors`. With `--quant-delay N` the two
//!    phases become one quantization-aware run from scratch of
//!    `--epochs + --qat-epochs` epochs whose fake quants switch on at step N.
//! 3. **eval**: the inference model through `create_eval_graph`, restored
//!    from the QAT checkpoint (the names match by construction), written to
//!    `OUT/eval.json`, and evaluated on the 10,000 test images, as is the
//!    float inference model on the float checkpoint.
//!
//! 4. **integer**: the eval graph lowered for `--target` with the QAT
//!    checkpoint (`lower_to_integer`), written to `OUT/model.tflite`, and
//!    evaluated on the integer executor (`int_accuracy`).
//!
//! The target also decides the training scheme: `tflite-int8` trains with
//! symmetric per-channel weights, `tflite-uint8` with asymmetric
//! per-tensor ones.
//!
//! `OUT/report.json` holds the accuracies (fractions), the images per
//! second of each phase and the total seconds.

use super::{set_threads, workspace_root};
use anyhow::{Context, Result, anyhow, bail};
use indicatif::{ProgressBar, ProgressStyle};
use quant_core::Graph;
use quant_core::data::{BatchOptions, Mnist};
use quant_core::models::{self, ModelOptions};
use quant_core::serialize::{checkpoint, write_graph_json};
use quant_kernels::integer::IntExecutor;
use quant_kernels::session::Session;
use quant_passes::lower::LowerOptions;
use quant_passes::passes::gradients::GradientOptions;
use quant_passes::passes::optimizer::{LrSchedule, OptimizerConfig, OptimizerKind};
use quant_passes::{
    Target, TrainingOptions, experimental_create_eval_graph, experimental_create_training_graph,
    quantized_value,
};
use quant_plugin_api::exporter_for;
use quant_train::{
    Progress, RunSummary, Trainer, evaluate, evaluate_integer, lower_session, training_graph,
};
use serde::Serialize;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// The update rule.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Optimizer {
    /// Plain gradient descent.
    Sgd,
    /// Momentum 0.9.
    Momentum,
    /// Adam (β₁ 0.9, β₂ 0.999, ε 1e-8).
    Adam,
}

/// Arguments of `train`.
#[derive(clap::Args)]
pub struct Args {
    /// MNIST directory (IDX files, plain or gzip); default: the repository's data/mnist.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Built-in model to train.
    #[arg(long, default_value = "mnist-cnn")]
    model: String,
    /// Float training epochs.
    #[arg(long, default_value_t = 2)]
    epochs: u64,
    /// Quantization-aware fine-tuning epochs.
    #[arg(long, default_value_t = 1)]
    qat_epochs: u64,
    /// One quantization-aware run from scratch whose fake quants switch on at this step.
    #[arg(long)]
    quant_delay: Option<u64>,
    /// Step of the QAT run from which batch norms use their moving statistics.
    #[arg(long)]
    freeze_bn_delay: Option<u64>,
    /// Batch size.
    #[arg(long, default_value_t = 64)]
    batch: usize,
    /// Learning rate of the float phase (cosine-decayed to a twentieth);
    /// the QAT fine-tuning uses a tenth of it.
    #[arg(long, default_value_t = 2e-3)]
    lr: f32,
    /// Update rule.
    #[arg(long, value_enum, default_value = "adam")]
    optimizer: Optimizer,
    /// Deployment target: `tflite-int8` (symmetric per-channel int8 weights) or
    /// `tflite-uint8` (the paper's per-tensor uint8).
    #[arg(long, default_value = "tflite-int8")]
    target: String,
    /// Plugin manifest adding targets (repeatable).
    #[arg(long = "plugin", value_name = "MANIFEST.toml")]
    plugins: Vec<PathBuf>,
    /// Seed of the weights and of the data order.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Output directory.
    #[arg(long, default_value = "target/train")]
    out: PathBuf,
    /// Print the report as one JSON object on stdout.
    #[arg(long)]
    json: bool,
    /// Stop each training phase after this many steps (quick runs).
    #[arg(long)]
    max_steps: Option<u64>,
    /// Evaluate on the first N test images only (quick runs).
    #[arg(long)]
    test_limit: Option<usize>,
}

impl Args {
    /// The defaults of every flag, with `out` as the output directory.
    pub fn defaults(out: PathBuf, data: Option<PathBuf>) -> Args {
        #[derive(clap::Parser)]
        struct Defaults {
            #[command(flatten)]
            args: Args,
        }
        let mut args = <Defaults as clap::Parser>::parse_from(["train"]).args;
        args.out = out;
        args.data = data;
        args
    }
}

/// `OUT/report.json`.
#[derive(Serialize)]
pub struct Report {
    /// The model trained.
    pub model: String,
    /// The deployment target.
    pub target: String,
    /// Test accuracy of the float inference graph on the float checkpoint.
    pub float_accuracy: f64,
    /// Test accuracy of the fake-quant eval graph on the QAT checkpoint.
    pub qat_accuracy: f64,
    /// Test accuracy of the integer model on quant's integer executor
    /// (`None` when no built-in exporter writes the target).
    pub int_accuracy: Option<f64>,
    /// Images per second of the float phase.
    pub train_images_per_sec: f64,
    /// Images per second of the QAT phase.
    pub qat_images_per_sec: f64,
    /// Wall-clock seconds of the whole pipeline.
    pub seconds: f64,
    /// Steps of the float phase.
    pub float_steps: u64,
    /// Steps of the QAT phase.
    pub qat_steps: u64,
    /// The quant delay of a single QAT run, if asked for.
    pub quant_delay: Option<u64>,
    /// Test images evaluated.
    pub test_images: usize,
    /// Worker threads.
    pub threads: usize,
}

/// Runs `train`.
pub fn run(args: Args) -> Result<()> {
    set_threads(args.threads)?;
    let report = pipeline(&args)?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "float accuracy {:.2}%  ({} steps, {:.0} images/s)",
            100.0 * report.float_accuracy,
            report.float_steps,
            report.train_images_per_sec
        );
        println!(
            "fake-quant eval accuracy {:.2}%  ({} QAT steps, {:.0} images/s)",
            100.0 * report.qat_accuracy,
            report.qat_steps,
            report.qat_images_per_sec
        );
        if let Some(acc) = report.int_accuracy {
            println!(
                "integer accuracy {:.2}%  ({}, model.tflite)",
                100.0 * acc,
                report.target
            );
        }
        println!("{:.0} s in all", report.seconds);
        println!("wrote {}", out_dir(&args.out).display());
    }
    Ok(())
}

fn out_dir(out: &Path) -> PathBuf {
    if out.is_absolute() {
        out.to_path_buf()
    } else {
        workspace_root().join(out)
    }
}

/// Runs the three phases and writes `OUT/report.json`.
pub fn pipeline(args: &Args) -> Result<Report> {
    let start = Instant::now();
    if !models::BUILTIN_MODELS.contains(&args.model.as_str()) {
        bail!(
            "--model {}: unknown model (built in: {})",
            args.model,
            models::BUILTIN_MODELS.join(", ")
        );
    }
    let plugins =
        quant_plugin_api::load_plugins(&args.plugins).map_err(|e| anyhow!("--plugin {e}"))?;
    let target = plugins
        .targets()
        .get(&args.target)
        .with_context(|| format!("--target {}", args.target))?
        .clone();
    if args.batch == 0 {
        bail!("--batch must be at least 1");
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr {}: must be a positive number", args.lr);
    }
    let out = out_dir(&args.out);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let data_dir = args
        .data
        .clone()
        .unwrap_or_else(|| workspace_root().join("data/mnist"));
    let mnist = Mnist::load(&data_dir)?;
    let test = match args.test_limit {
        Some(n) => mnist.test.head(n),
        None => mnist.test.clone(),
    };
    let batches = BatchOptions {
        batch_size: args.batch,
        shuffle: true,
        seed: args.seed,
        drop_last: true,
    };
    let per_epoch = Trainer::steps_per_epoch(&mnist.train, args.batch);
    let cap = |steps: u64| args.max_steps.map_or(steps, |m| steps.min(m));
    let optimizer = optimizer(args.optimizer);
    let training_options = |quant_delay: u64| TrainingOptions {
        quant_delay: quant_delay as i64,
        freeze_bn_delay: args.freeze_bn_delay.map(|d| d as i64),
        ..target.training_options()
    };

    // Phase 1: float training (skipped by --quant-delay).
    let (float_ckpt, float_run) = match args.quant_delay {
        Some(_) => (None, None),
        None => {
            let steps = cap(args.epochs * per_epoch);
            let tg = training_graph(
                model(&args.model, args.seed, true)?,
                models::INPUT,
                models::LOGITS,
                &optimizer,
                &GradientOptions::default(),
            )?;
            let schedule = LrSchedule::Cosine {
                lr: args.lr,
                total_steps: steps,
                final_lr: args.lr / 20.0,
            };
            let mut trainer = Trainer::new(tg, schedule)?;
            let summary = train_phase("float", &mut trainer, &mnist, &batches, steps)?;
            let ckpt = trainer.session().checkpoint();
            checkpoint::write(&out.join("float.safetensors"), &ckpt)?;
            (Some(ckpt), Some(summary))
        }
    };

    // Phase 2: quantization-aware training.
    let (quant_delay, qat_steps, qat_lr) = match args.quant_delay {
        Some(d) => (d, cap((args.epochs + args.qat_epochs) * per_epoch), args.lr),
        None => (0, cap(args.qat_epochs * per_epoch), args.lr / 10.0),
    };
    let mut qat_graph = model(&args.model, args.seed, true)?;
    experimental_create_training_graph(&mut qat_graph, &training_options(quant_delay))?;
    let tg = training_graph(
        qat_graph,
        models::INPUT,
        models::LOGITS,
        &optimizer,
        &GradientOptions::default(),
    )?;
    let mut trainer = Trainer::new(tg, LrSchedule::Constant(qat_lr))?;
    if let Some(ckpt) = &float_ckpt {
        trainer.session_mut().restore(ckpt.clone())?;
    }
    let until = trainer.global_step() + qat_steps;
    let qat_run = train_phase("qat", &mut trainer, &mnist, &batches, until)?;
    let qat_ckpt = trainer.session().checkpoint();
    checkpoint::write(&out.join("qat.safetensors"), &qat_ckpt)?;

    // Phase 3: the eval graphs.
    let mut eval = model(&args.model, args.seed, false)?;
    experimental_create_eval_graph(&mut eval, &target.eval_options())?;
    write_graph_json(&out.join("eval.json"), &eval)?;
    let qat_accuracy = accuracy("fake-quant eval", eval.clone(), &qat_ckpt, &test)?;

    // Phase 4: integer export and the integer model's accuracy, for the
    // targets the built-in TFLite exporter writes.
    let int_accuracy = match exporter_for(&target) {
        Ok("tflite-int8" | "tflite-uint8") => {
            Some(export_and_evaluate(eval, &qat_ckpt, &target, &out, &test)?)
        }
        Ok(other) => {
            eprintln!(
                "integer phase skipped: target {} is written by the plugin exporter `{other}`; use `cargo xtask export`",
                target.name
            );
            None
        }
        Err(why) => {
            eprintln!("integer phase skipped: {why}");
            None
        }
    };
    let float_graph = model(&args.model, args.seed, false)?;
    let float_accuracy = accuracy(
        "float eval",
        float_graph,
        float_ckpt.as_ref().unwrap_or(&qat_ckpt),
        &test,
    )?;

    let report = Report {
        model: args.model.clone(),
        target: args.target.clone(),
        float_accuracy,
        qat_accuracy,
        int_accuracy,
        train_images_per_sec: float_run.map_or(0.0, |r| r.images_per_sec),
        qat_images_per_sec: qat_run.images_per_sec,
        seconds: start.elapsed().as_secs_f64(),
        float_steps: float_run.map_or(0, |r| r.steps),
        qat_steps: qat_run.steps,
        quant_delay: args.quant_delay,
        test_images: test.len(),
        threads: rayon::current_num_threads(),
    };
    let path = out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(report)
}

fn optimizer(kind: Optimizer) -> OptimizerConfig {
    let kind = match kind {
        Optimizer::Sgd => OptimizerKind::Sgd,
        Optimizer::Momentum => OptimizerKind::Momentum {
            momentum: 0.9,
            nesterov: false,
        },
        Optimizer::Adam => OptimizerKind::ADAM,
    };
    OptimizerConfig {
        kind,
        weight_decay: 0.0,
    }
}

fn model(name: &str, seed: u64, training: bool) -> Result<Graph> {
    Ok(models::builtin(name, ModelOptions { seed, training }).context("built-in model")??)
}

/// The test accuracy of `graph` with the variables of `ckpt`.
fn accuracy(
    what: &str,
    graph: Graph,
    ckpt: &checkpoint::Checkpoint,
    test: &quant_core::data::MnistSplit,
) -> Result<f64> {
    // The eval graph's output is the fake quant of the logits, when there is one.
    let logits = graph.outlet(models::LOGITS)?;
    let logits = quantized_value(&graph, logits);
    let logits = graph.node(logits.node).name().to_string();
    let mut session = Session::new(graph)?;
    session.restore(ckpt.clone())?;
    let started = Instant::now();
    let acc = evaluate(&mut session, models::INPUT, &logits, test, 500)?;
    eprintln!(
        "{what}: {:.2}% of {} test images ({:.1} s)",
        100.0 * acc,
        test.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(acc)
}

/// Lowers the eval graph with the QAT checkpoint for `target`, writes
/// `OUT/model.tflite`, and returns the integer model's test accuracy on
/// quant's integer executor.
fn export_and_evaluate(
    eval: Graph,
    ckpt: &checkpoint::Checkpoint,
    target: &Target,
    out: &Path,
    test: &quant_core::data::MnistSplit,
) -> Result<f64> {
    let mut session = Session::new(eval)?;
    session.restore(ckpt.clone())?;
    let options = LowerOptions {
        inputs: vec![models::INPUT.to_string()],
        outputs: vec![models::LOGITS.to_string()],
        input_ranges: vec![(models::INPUT.to_string(), 0.0, 1.0)],
        ..LowerOptions::default()
    };
    let model = lower_session(&mut session, target, &options)?;
    let path = out.join("model.tflite");
    let bytes = super::export::write_tflite(&model, &path)?;
    eprintln!(
        "integer model: {} ({bytes} bytes, {})",
        path.display(),
        target.name
    );
    let executor = IntExecutor::new(&model)?;
    let started = Instant::now();
    let acc = evaluate_integer(&executor, test, 500)?;
    eprintln!(
        "integer ({}): {:.2}% of {} test images ({:.1} s)",
        target.name,
        100.0 * acc,
        test.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(acc)
}

/// Trains until step `until`, showing progress on stderr: a bar on a
/// terminal, a line every 100 steps otherwise.
fn train_phase(
    label: &str,
    trainer: &mut Trainer,
    mnist: &Mnist,
    batches: &BatchOptions,
    until: u64,
) -> Result<RunSummary> {
    let first = trainer.global_step();
    let total = until.saturating_sub(first);
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = ProgressBar::new(total);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>6} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(label.to_string());
        bar
    });
    let message = |p: &Progress| {
        format!(
            "epoch {} loss {:.4} acc {:.2}% {:.0} img/s",
            p.epoch + 1,
            p.mean_loss,
            100.0 * p.accuracy,
            p.images_per_sec
        )
    };
    let summary = trainer.train_until(&mnist.train, batches, until, |p| {
        let done = p.last.step - first;
        match &bar {
            Some(bar) => {
                bar.set_position(done);
                if done.is_multiple_of(10) || done == total {
                    bar.set_message(message(p));
                }
            }
            None => {
                if done.is_multiple_of(100) || done == total {
                    eprintln!("{label} step {done}/{total}: {}", message(p));
                }
            }
        }
    })?;
    if let Some(bar) = bar {
        bar.finish();
    }
    eprintln!(
        "{label}: {} steps in {:.1} s, loss {:.4}, train accuracy {:.2}%, {:.0} images/s",
        summary.steps,
        summary.seconds,
        summary.mean_loss,
        100.0 * summary.accuracy,
        summary.images_per_sec
    );
    Ok(summary)
}
