//! quant's integer executor against LiteRT 2.3, bit for bit.
//!
//! Seeded random single-op models for every `IntOpKind` in uint8 and int8
//! (and a small conv → pool → reshape → FC → softmax classifier with float
//! I/O) are written with `quant_tflite::write` and run by
//! `quant_kernels::integer::IntExecutor` (with its fast kernels and with
//! its scalar reference kernels) and by LiteRT's reference kernels
//! (`BUILTIN_REF`, R), which define quant's integer arithmetic
//! (reference-semantics §7.10, §10 decision 6). Every output integer (every
//! float bit, for DEQUANTIZE outputs) must be equal. The differences from
//! LiteRT's builtin kernels (B) and XNNPACK (X) are counted and printed, not
//! asserted: they round ties differently.
//!
//! Needs `QUANT_LITERT_PYTHON` (set by `cargo xtask test`); see
//! `litert/mod.rs`. Failing cases are saved under
//! `target/tmp/litert-failures/<test>/` as `.tflite` plus input `.npy` files.

mod litert;

use litert::models::{Builder, OPS, Ty, int_tensor, per_tensor, single_op, small_classifier};
use litert::{Case, Diff, Resolver, Results, describe, diff_all, run_litert, save_case};
use quant_core::integer::{Activation, IntOpKind};
use quant_core::{DType, Tensor};
use quant_kernels::integer::{IntExecutor, KernelPath};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// Random models per op and storage type (`QUANT_LITERT_MODELS_PER_OP`
/// overrides it for a longer search).
const MODELS_PER_OP: u64 = 60;

/// Ops that also get larger models (wider accumulations, more output rows
/// and channels: the fast kernels' tiles and the parallel split).
const LAYERS: [&str; 3] = ["CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"];

/// Larger models per layer op and storage type.
const LARGE_MODELS_PER_OP: u64 = 8;

/// quant's outputs with the default (fast) kernels and with the scalar
/// reference kernels.
fn ours(case: &Case) -> Result<[(KernelPath, Vec<Tensor>); 2], String> {
    let run = |path: KernelPath| {
        let exec = match path {
            KernelPath::Fast => IntExecutor::new(&case.model),
            KernelPath::Reference => IntExecutor::with_kernels(&case.model, path),
        }
        .map_err(|e| format!("IntExecutor ({path:?} kernels): {e}"))?;
        let out = exec
            .run(&case.inputs)
            .map_err(|e| format!("IntExecutor::run ({path:?} kernels): {e}"))?;
        Ok::<_, String>((path, out))
    };
    let outputs = [run(KernelPath::Fast)?, run(KernelPath::Reference)?];
    // Integer outputs carry the model's parameters.
    for (path, tensors) in &outputs {
        for (t, &index) in tensors.iter().zip(&case.model.outputs) {
            let declared = &case.model.tensors[index];
            if declared.dtype != DType::F32 && t.quant() != declared.quant.as_ref() {
                return Err(format!(
                    "output {} ({path:?} kernels) carries {:?}, the model declares {:?}",
                    declared.name,
                    t.quant(),
                    declared.quant
                ));
            }
        }
    }
    Ok(outputs)
}

/// Per-group counts.
#[derive(Default)]
struct Tally {
    models: usize,
    /// Output elements compared with R (per kernel path).
    elements: usize,
    /// (elements, model runs) where quant (either kernel path) differs from R.
    r_differ: (usize, usize),
    /// (elements, models) where B / X differ from quant, and models they
    /// failed to run.
    other: BTreeMap<Resolver, (usize, usize, usize)>,
}

/// Where a test saves the cases it fails on (emptied when it starts).
fn failures_dir(test: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("litert-failures")
        .join(test)
}

/// Compares quant with every kernel set, prints a table per group and
/// returns the failures (quant ≠ R, or a run that should not fail).
fn compare(cases: &[Case], results: &Results, failures_dir: &Path) -> Vec<String> {
    let mut tallies: BTreeMap<&str, Tally> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut rejections = Vec::new();
    for (case, runs) in cases.iter().zip(results) {
        let tally = tallies.entry(case.group.as_str()).or_default();
        tally.models += 1;
        let fail = |why: String| {
            let _ = save_case(failures_dir, case);
            format!(
                "{} ({}): {why}\n{}",
                case.name,
                case.model.description,
                describe(&case.model)
            )
        };
        let paths = match ours(case) {
            Ok(o) => o,
            Err(e) => {
                failures.push(fail(e));
                continue;
            }
        };
        for (&resolver, run) in runs {
            let theirs = match run {
                Ok(t) => t,
                Err(e) if resolver == Resolver::Ref => {
                    failures.push(fail(format!("LiteRT R did not run it: {e}")));
                    continue;
                }
                Err(e) => {
                    tally.other.entry(resolver).or_default().2 += 1;
                    rejections.push(format!("{} {}: {e}", resolver.letter(), case.name));
                    continue;
                }
            };
            // Both kernel paths against R; the default (fast) one against B and X.
            let paths = if resolver == Resolver::Ref {
                &paths[..]
            } else {
                &paths[..1]
            };
            for (path, ours) in paths {
                let Some(d) = diff_all(ours, theirs) else {
                    failures.push(fail(format!(
                        "quant ({path:?} kernels) gave {} outputs, LiteRT {} gave {}",
                        ours.len(),
                        resolver.letter(),
                        theirs.len()
                    )));
                    continue;
                };
                if resolver == Resolver::Ref {
                    if *path == KernelPath::Fast {
                        tally.elements += d.elements;
                    }
                    if d.differ > 0 {
                        tally.r_differ.0 += d.differ;
                        tally.r_differ.1 += 1;
                        failures.push(fail(format!(
                            "{path:?} kernels: {}",
                            mismatch(&d, ours, theirs)
                        )));
                    }
                } else if d.differ > 0 {
                    let e = tally.other.entry(resolver).or_default();
                    e.0 += d.differ;
                    e.1 += 1;
                }
            }
        }
    }
    println!(
        "{:<26} {:>6} {:>8} {:>12} {:>18} {:>18}",
        "op dtype", "models", "outputs", "quant != R", "B != quant", "X != quant"
    );
    let other = |t: &Tally, r: Resolver| {
        let (e, m, f) = t.other.get(&r).copied().unwrap_or_default();
        let failed = if f > 0 {
            format!(", {f} failed")
        } else {
            String::new()
        };
        format!("{e} in {m}{failed}")
    };
    let mut totals = (0, 0, 0);
    for (group, t) in &tallies {
        totals.0 += t.models;
        totals.1 += t.elements;
        totals.2 += t.r_differ.0;
        println!(
            "{group:<26} {:>6} {:>8} {:>12} {:>18} {:>18}",
            t.models,
            t.elements,
            t.r_differ.0,
            other(t, Resolver::Builtin),
            other(t, Resolver::Default)
        );
    }
    println!(
        "total: {} models, {} outputs compared with R, {} differ",
        totals.0, totals.1, totals.2
    );
    for r in &rejections {
        println!("  not run by LiteRT {r}");
    }
    failures
}

fn mismatch(d: &Diff, ours: &[Tensor], theirs: &[Tensor]) -> String {
    let shapes = |ts: &[Tensor]| ts.iter().map(|t| t.shape().to_vec()).collect::<Vec<_>>();
    match d.first {
        Some((i, a, b)) => format!(
            "{} of {} outputs differ from R (max {}); first at flat index {i}: quant {a}, R {b}",
            d.differ, d.elements, d.max_abs
        ),
        None => format!(
            "output shapes or dtypes differ: quant {:?} {:?}, R {:?} {:?}",
            shapes(ours),
            ours.iter().map(Tensor::dtype).collect::<Vec<_>>(),
            shapes(theirs),
            theirs.iter().map(Tensor::dtype).collect::<Vec<_>>()
        ),
    }
}

/// Runs `cases` in LiteRT and in quant and asserts quant = R everywhere.
fn check(test: &str, cases: &[Case]) {
    let Some(python) = litert::python() else {
        return;
    };
    let dir = failures_dir(test);
    let _ = std::fs::remove_dir_all(&dir);
    let start = Instant::now();
    let results = run_litert(&python, cases, &Resolver::ALL);
    println!(
        "LiteRT ran {} models under R, B and X in {:.1}s",
        cases.len(),
        start.elapsed().as_secs_f64()
    );
    let failures = compare(cases, &results, &dir);
    assert!(
        failures.is_empty(),
        "{} of {} models differ from LiteRT's reference kernels (cases saved in {}):\n{}",
        failures.len(),
        cases.len(),
        dir.display(),
        failures
            .iter()
            .take(8)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn single_op_models_match_litert_reference_kernels() {
    let per_op = std::env::var("QUANT_LITERT_MODELS_PER_OP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MODELS_PER_OP);
    let mut cases = Vec::new();
    for (i, op) in OPS.iter().enumerate() {
        for (j, ty) in [Ty::U8, Ty::I8].into_iter().enumerate() {
            for k in 0..per_op.min(5_000) {
                let seed = (i as u64 * 2 + j as u64) * 10_000 + k;
                cases.push(single_op(op, ty, seed, false));
            }
            if LAYERS.contains(op) {
                for k in 0..LARGE_MODELS_PER_OP.max(per_op / 8).min(5_000) {
                    let seed = (i as u64 * 2 + j as u64) * 10_000 + 5_000 + k;
                    cases.push(single_op(op, ty, seed, true));
                }
            }
        }
    }
    check("single_op", &cases);
}

#[test]
fn float_io_classifier_matches_litert_reference_kernels() {
    let cases = vec![
        small_classifier(Ty::U8, 1, 3),
        small_classifier(Ty::I8, 2, 3),
        small_classifier(Ty::I8, 3, 1),
    ];
    check("classifier", &cases);
}

/// The harness itself: LiteRT aborts the whole process on an ADD whose
/// output multiplier `2·max(S1, S2) / (2^20·S_out)` is ≥ 1
/// (reference-semantics §7.7); the runner must report that model as a
/// crash and still run the models after it.
#[test]
fn runner_reports_a_model_that_kills_litert_and_runs_the_rest() {
    let Some(python) = litert::python() else {
        return;
    };
    let add = |name: &str, s_out: f32| {
        let mut b = Builder::default();
        let q = per_tensor(1.0, 0);
        let x = b.input(
            "a",
            int_tensor(DType::U8, &[1, 4], &[1, 2, 3, 4]),
            Some(q.clone()),
        );
        let y = b.input("b", int_tensor(DType::U8, &[1, 4], &[4, 3, 2, 1]), Some(q));
        let out = b.computed("sum", DType::U8, &[1, 4], Some(per_tensor(s_out, 0)));
        b.op(
            IntOpKind::Add {
                activation: Activation::None,
            },
            &[Some(x), Some(y)],
            &[out],
        );
        b.output(out);
        b.case(name.to_string(), "ADD u8", "runner test")
    };
    let cases = [
        add("add_ok_before", 1.0),
        add("add_aborts", 2f32.powi(-20)),
        add("add_ok_after", 0.5),
    ];
    let results = run_litert(&python, &cases, &[Resolver::Ref]);
    let value = |i: usize| {
        results[i][&Resolver::Ref]
            .as_ref()
            .map(|t| t[0].to_f64_vec())
    };
    assert_eq!(value(0).unwrap(), vec![5.0; 4]);
    match value(1) {
        Err(e) => assert_eq!(e.stage, "crash", "{e}"),
        Ok(v) => panic!("LiteRT ran the aborting ADD: {v:?}"),
    }
    assert_eq!(value(2).unwrap(), vec![10.0; 4]);
}
