//! The training loop on real MNIST: the loss falls, a restored checkpoint
//! resumes bit for bit, and a quantization-aware graph trains too.

use quant_core::Graph;
use quant_core::data::{BatchOptions, Mnist};
use quant_core::models::{self, ModelOptions};
use quant_kernels::session::Session;
use quant_passes::passes::gradients::GradientOptions;
use quant_passes::passes::optimizer::{LrSchedule, OptimizerConfig, OptimizerKind};
use quant_passes::{TrainingOptions, experimental_create_training_graph};
use quant_train::{Trainer, training_graph};
use std::path::Path;
use std::sync::LazyLock;

static MNIST: LazyLock<Mnist> = LazyLock::new(|| {
    Mnist::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist")).unwrap()
});

fn model(quantized: Option<i64>) -> Graph {
    let mut g = models::builtin(
        "mnist-cnn",
        ModelOptions {
            training: true,
            ..ModelOptions::default()
        },
    )
    .unwrap()
    .unwrap();
    if let Some(quant_delay) = quantized {
        experimental_create_training_graph(
            &mut g,
            &TrainingOptions {
                quant_delay,
                ..TrainingOptions::default()
            },
        )
        .unwrap();
    }
    g
}

fn trainer(graph: Graph) -> Trainer {
    let optimizer = OptimizerConfig {
        kind: OptimizerKind::ADAM,
        weight_decay: 0.0,
    };
    let tg = training_graph(
        graph,
        models::INPUT,
        models::LOGITS,
        &optimizer,
        &GradientOptions::default(),
    )
    .unwrap();
    Trainer::new(tg, LrSchedule::Constant(1e-3)).unwrap()
}

fn batches() -> BatchOptions {
    BatchOptions {
        batch_size: 32,
        shuffle: true,
        seed: 1,
        drop_last: true,
    }
}

fn losses(t: &mut Trainer, until: u64) -> Vec<f32> {
    let mut out = Vec::new();
    t.train_until(&MNIST.train, &batches(), until, |p| out.push(p.last.loss))
        .unwrap();
    out
}

#[test]
fn forty_adam_steps_lower_the_loss_of_the_float_and_the_qat_graph() {
    for quantized in [None, Some(0)] {
        let mut t = trainer(model(quantized));
        let l = losses(&mut t, 40);
        let first: f32 = l[..5].iter().sum::<f32>() / 5.0;
        let last: f32 = l[35..].iter().sum::<f32>() / 5.0;
        assert!(
            last < 0.6 * first,
            "quantized={quantized:?}: loss {first} -> {last}"
        );
        assert_eq!(t.global_step(), 40);
    }
}

#[test]
fn the_qat_loss_reads_the_quantized_logits_so_their_range_is_learned() {
    let optimizer = OptimizerConfig {
        kind: OptimizerKind::ADAM,
        weight_decay: 0.0,
    };
    let tg = training_graph(
        model(Some(0)),
        models::INPUT,
        models::LOGITS,
        &optimizer,
        &GradientOptions::default(),
    )
    .unwrap();
    assert_eq!(tg.logits, "logits/act_quant/FakeQuantWithMinMaxVars");
    let mut t = Trainer::new(tg, LrSchedule::Constant(1e-3)).unwrap();
    losses(&mut t, 3);
    // The initial range is [0, 6]; logits are signed, so the learned minimum
    // goes below 0 once the range updates run.
    let min = t.session().variable("logits/act_quant/min").unwrap();
    let min = min.array::<f32>().unwrap().iter().copied().next().unwrap();
    assert!(min < 0.0, "logits range minimum {min}");
}

#[test]
fn a_restored_checkpoint_continues_bit_identically() {
    // quant_delay 3: the restored run crosses the delay.
    let mut whole = trainer(model(Some(3)));
    let want = losses(&mut whole, 6);
    let mut first = trainer(model(Some(3)));
    let mut got = losses(&mut first, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mid.safetensors");
    first.session().save(&path).unwrap();
    let mut resumed = trainer(model(Some(3)));
    let ignored = resumed.session_mut().load(&path).unwrap();
    assert!(ignored.is_empty(), "{ignored:?}");
    got.extend(losses(&mut resumed, 6));
    assert_eq!(got, want);
    // And the variables end equal, bit for bit.
    assert_eq!(resumed.session().checkpoint(), whole.session().checkpoint());
}

#[test]
fn evaluate_counts_arg_max_hits() {
    let g = models::builtin("mnist-cnn", ModelOptions::default())
        .unwrap()
        .unwrap();
    let mut s = Session::new(g).unwrap();
    let acc =
        quant_train::evaluate(&mut s, models::INPUT, models::LOGITS, &MNIST.test, 2500).unwrap();
    // An untrained network: roughly chance, certainly not trained accuracy.
    assert!((0.0..0.5).contains(&acc), "{acc}");
}

#[test]
fn a_training_checkpoint_restores_into_the_eval_graph_by_name() {
    // Train the QAT graph a few steps, then load its checkpoint into the
    // eval rewrite of the inference model: every variable the eval graph
    // has must come from the checkpoint (the names match by construction).
    let mut t = trainer(model(Some(0)));
    losses(&mut t, 3);
    let ckpt = t.session().checkpoint();
    let mut eval = models::builtin("mnist-cnn", ModelOptions::default())
        .unwrap()
        .unwrap();
    quant_passes::create_eval_graph(&mut eval).unwrap();
    let variables: Vec<String> = eval
        .nodes()
        .filter(|(_, n)| n.op() == "Variable")
        .map(|(_, n)| n.name().to_string())
        .collect();
    assert!(variables.iter().any(|v| v.ends_with("act_quant/max")));
    for v in &variables {
        assert!(
            ckpt.contains_key(v),
            "{v} is not in the training checkpoint"
        );
    }
    let mut s = Session::new(eval).unwrap();
    s.restore(ckpt.clone()).unwrap();
    for v in &variables {
        assert_eq!(s.variable(v), ckpt.get(v), "{v}");
    }
    // The learned ranges moved away from their initial [0, 6].
    let max = ckpt["conv1/act_quant/max"]
        .array::<f32>()
        .unwrap()
        .iter()
        .copied()
        .next()
        .unwrap();
    assert!(max != 6.0 && max > 0.0, "{max}");
}
