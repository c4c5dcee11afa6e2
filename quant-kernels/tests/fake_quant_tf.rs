//! The fake-quant kernels against TensorFlow 2.21's own outputs
//! (`fixtures/tf/fake_quant_vectors`, written by
//! `tools/fixtures/make_tf_fixtures.py`).
//!
//! `y` and `dx` must match bit for bit, for the fast kernels and for the
//! scalar reference. `dmin` and `dmax` are sums that TensorFlow adds up in
//! Eigen's order, so they are compared with a tolerance of 1e-5 of the sum
//! of the magnitudes of the summed gradients.

use std::path::{Path, PathBuf};

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use quant_kernels::kernels::fake_quant::{
    FakeQuantParams, fake_quant_args, fake_quant_args_grad, fake_quant_per_channel,
    fake_quant_per_channel_grad, fake_quant_vars, fake_quant_vars_grad, nudge, reference,
};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct Case {
    name: String,
    op: String,
    num_bits: u32,
    narrow_range: bool,
    min: serde_json::Value,
    max: serde_json::Value,
    min_file: String,
    max_file: String,
    x: String,
    g: String,
    y: String,
    dx: String,
    dmin: Option<String>,
    dmax: Option<String>,
}

/// One case's arrays, flattened in row-major order.
struct Vectors {
    shape: Vec<usize>,
    x: Vec<f32>,
    g: Vec<f32>,
    y: Vec<f32>,
    dx: Vec<f32>,
    min: Vec<f32>,
    max: Vec<f32>,
    dmin: Option<Vec<f32>>,
    dmax: Option<Vec<f32>>,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/fake_quant_vectors")
}

fn load(file: &str) -> ArrayD<f32> {
    let path = dir().join(file);
    read_npy(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn flat(file: &str) -> Vec<f32> {
    load(file).iter().copied().collect()
}

fn cases() -> Vec<Case> {
    let text = std::fs::read_to_string(dir().join("cases.json")).expect("cases.json");
    serde_json::from_str(&text).expect("cases.json parses")
}

impl Vectors {
    fn load(case: &Case) -> Self {
        let x = load(&case.x);
        let v = Self {
            shape: x.shape().to_vec(),
            x: x.iter().copied().collect(),
            g: flat(&case.g),
            y: flat(&case.y),
            dx: flat(&case.dx),
            min: flat(&case.min_file),
            max: flat(&case.max_file),
            dmin: case.dmin.as_deref().map(flat),
            dmax: case.dmax.as_deref().map(flat),
        };
        // The JSON numbers and the float32 files agree.
        let json: Vec<f32> = match &case.min {
            serde_json::Value::Array(a) => a.iter().map(|n| n.as_f64().unwrap() as f32).collect(),
            n => vec![n.as_f64().unwrap() as f32],
        };
        assert_eq!(json, v.min, "{}: min", case.name);
        let json: Vec<f32> = match &case.max {
            serde_json::Value::Array(a) => a.iter().map(|n| n.as_f64().unwrap() as f32).collect(),
            n => vec![n.as_f64().unwrap() as f32],
        };
        assert_eq!(json, v.max, "{}: max", case.name);
        assert_eq!(v.x.len(), v.g.len());
        assert_eq!(v.x.len(), v.y.len());
        assert_eq!(v.x.len(), v.dx.len());
        v
    }
}

/// Outputs of one implementation (fast or reference).
struct Outputs {
    y: Vec<f32>,
    dx: Vec<f32>,
    dmin: Vec<f32>,
    dmax: Vec<f32>,
}

type Impl = fn(&Case, &Vectors, FakeQuantParams) -> Outputs;

fn fast(case: &Case, v: &Vectors, p: FakeQuantParams) -> Outputs {
    let n = v.x.len();
    let mut o = Outputs {
        y: vec![f32::NAN; n],
        dx: vec![f32::NAN; n],
        dmin: vec![f32::NAN; v.min.len()],
        dmax: vec![f32::NAN; v.min.len()],
    };
    match case.op.as_str() {
        "vars" => {
            fake_quant_vars(&v.x, v.min[0], v.max[0], p, &mut o.y);
            let (a, b) = fake_quant_vars_grad(&v.g, &v.x, v.min[0], v.max[0], p, &mut o.dx);
            (o.dmin[0], o.dmax[0]) = (a, b);
        }
        "args" => {
            fake_quant_args(&v.x, v.min[0], v.max[0], p, &mut o.y);
            fake_quant_args_grad(&v.g, &v.x, v.min[0], v.max[0], p, &mut o.dx);
        }
        "per_channel" => {
            fake_quant_per_channel(&v.x, &v.min, &v.max, p, &mut o.y);
            fake_quant_per_channel_grad(
                &v.g,
                &v.x,
                &v.min,
                &v.max,
                p,
                &mut o.dx,
                &mut o.dmin,
                &mut o.dmax,
            );
        }
        op => panic!("{}: unknown op {op}", case.name),
    }
    o
}

fn scalar_reference(case: &Case, v: &Vectors, p: FakeQuantParams) -> Outputs {
    let n = v.x.len();
    let mut o = Outputs {
        y: vec![f32::NAN; n],
        dx: vec![f32::NAN; n],
        dmin: vec![f32::NAN; v.min.len()],
        dmax: vec![f32::NAN; v.min.len()],
    };
    match case.op.as_str() {
        "vars" => {
            reference::fake_quant_vars(&v.x, v.min[0], v.max[0], p, &mut o.y);
            let (a, b) =
                reference::fake_quant_vars_grad(&v.g, &v.x, v.min[0], v.max[0], p, &mut o.dx);
            (o.dmin[0], o.dmax[0]) = (a, b);
        }
        "args" => {
            reference::fake_quant_args(&v.x, v.min[0], v.max[0], p, &mut o.y);
            reference::fake_quant_args_grad(&v.g, &v.x, v.min[0], v.max[0], p, &mut o.dx);
        }
        "per_channel" => {
            reference::fake_quant_per_channel(&v.x, &v.min, &v.max, p, &mut o.y);
            reference::fake_quant_per_channel_grad(
                &v.g,
                &v.x,
                &v.min,
                &v.max,
                p,
                &mut o.dx,
                &mut o.dmin,
                &mut o.dmax,
            );
        }
        op => panic!("{}: unknown op {op}", case.name),
    }
    o
}

/// The first index where `got` and `want` differ in bits, described.
fn first_mismatch(what: &str, x: &[f32], want: &[f32], got: &[f32]) -> Option<String> {
    let count = want
        .iter()
        .zip(got)
        .filter(|(a, b)| a.to_bits() != b.to_bits())
        .count();
    let i = (0..want.len()).find(|&i| want[i].to_bits() != got[i].to_bits())?;
    Some(format!(
        "{what}: {count} of {} differ; first at index {i}: x = {:e} ({:#010x}), \
         expected {:e} ({:#010x}), got {:e} ({:#010x})",
        want.len(),
        x[i],
        x[i].to_bits(),
        want[i],
        want[i].to_bits(),
        got[i],
        got[i].to_bits(),
    ))
}

/// `Σ|g|` over the elements that feed each channel's `dmin` and `dmax`.
fn magnitudes(case: &Case, v: &Vectors, p: FakeQuantParams) -> (Vec<f64>, Vec<f64>) {
    let channels = v.min.len();
    let (mut below, mut above) = (vec![0f64; channels], vec![0f64; channels]);
    for (i, (&x, &g)) in v.x.iter().zip(&v.g).enumerate() {
        let c = if case.op == "per_channel" {
            i % channels
        } else {
            0
        };
        let n = nudge(v.min[c], v.max[c], p);
        if x < n.nudged_min {
            below[c] += f64::from(g.abs());
        }
        if x > n.nudged_max {
            above[c] += f64::from(g.abs());
        }
    }
    (below, above)
}

fn check_sum(what: &str, want: f32, got: f32, magnitude: f64) -> Option<String> {
    let tol = 1e-5 * magnitude + 1e-6;
    let err = (f64::from(want) - f64::from(got)).abs();
    (err > tol || want.is_nan() != got.is_nan())
        .then(|| format!("{what}: expected {want:e}, got {got:e} (tolerance {tol:e})"))
}

fn check(case: &Case, v: &Vectors, p: FakeQuantParams, o: &Outputs) -> Vec<String> {
    let mut problems = Vec::new();
    problems.extend(first_mismatch("y", &v.x, &v.y, &o.y));
    problems.extend(first_mismatch("dx", &v.x, &v.dx, &o.dx));
    if let (Some(dmin), Some(dmax)) = (&v.dmin, &v.dmax) {
        let (below, above) = magnitudes(case, v, p);
        for c in 0..dmin.len() {
            problems.extend(check_sum(
                &format!("dmin[{c}]"),
                dmin[c],
                o.dmin[c],
                below[c],
            ));
            problems.extend(check_sum(
                &format!("dmax[{c}]"),
                dmax[c],
                o.dmax[c],
                above[c],
            ));
        }
    }
    problems
}

fn run_all(label: &str, imp: Impl) {
    let cases = cases();
    assert!(
        cases.len() >= 33,
        "expected at least 33 cases, found {}",
        cases.len()
    );
    let mut failures = Vec::new();
    for case in &cases {
        let p = FakeQuantParams::new(case.num_bits, case.narrow_range).expect("valid num_bits");
        let v = Vectors::load(case);
        let o = imp(case, &v, p);
        for problem in check(case, &v, p, &o) {
            failures.push(format!("{label} {}: {problem}", case.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn fast_kernels_match_tensorflow() {
    run_all("fast", fast);
}

#[test]
fn scalar_reference_matches_tensorflow() {
    run_all("reference", scalar_reference);
}

/// The vectors cover every op, per-channel ranks 1, 2 and 4 with the channel
/// as the last dimension, `[0, 0]` ranges, and every bit width used.
#[test]
fn coverage_of_the_vectors() {
    let mut ranks = Vec::new();
    let mut ops = Vec::new();
    let mut zero_ranges = 0;
    for case in cases() {
        let v = Vectors::load(&case);
        if case.op == "per_channel" {
            assert_eq!(
                v.shape.last(),
                Some(&v.min.len()),
                "{}: channel = last dim",
                case.name
            );
            ranks.push(v.shape.len());
        } else {
            assert_eq!(v.min.len(), 1, "{}", case.name);
        }
        ops.push(case.op.clone());
        zero_ranges += v
            .min
            .iter()
            .zip(&v.max)
            .filter(|(a, b)| **a == 0.0 && **b == 0.0)
            .count();
        assert_eq!(v.dmin.is_some(), case.op != "args", "{}", case.name);
    }
    for rank in [1, 2, 4] {
        assert!(ranks.contains(&rank), "no per-channel case of rank {rank}");
    }
    for op in ["vars", "args", "per_channel"] {
        assert!(ops.iter().any(|o| o == op), "no {op} case");
    }
    assert!(
        zero_ranges >= 3,
        "expected [0, 0] ranges in vars and per-channel cases"
    );
}

/// Per-channel inputs of rank 1, 2 and 4 built from the rank-4 vectors: the
/// same data viewed as `[n*h*w, c]` and as one `[n*h*w*c]` row of
/// per-element channels give the same bits as TensorFlow's rank-4 outputs.
#[test]
fn per_channel_views_of_rank4_vectors() {
    let cases = cases();
    let case = cases
        .iter()
        .find(|c| c.op == "per_channel" && c.name.ends_with("rank4"))
        .expect("a rank-4 per-channel case");
    let v = Vectors::load(case);
    let p = FakeQuantParams::new(case.num_bits, case.narrow_range).unwrap();
    let channels = v.min.len();
    // Rank 1: every element its own channel, ranges repeated.
    let mins: Vec<f32> = (0..v.x.len()).map(|i| v.min[i % channels]).collect();
    let maxs: Vec<f32> = (0..v.x.len()).map(|i| v.max[i % channels]).collect();
    let mut y = vec![f32::NAN; v.x.len()];
    fake_quant_per_channel(&v.x, &mins, &maxs, p, &mut y);
    assert_eq!(first_mismatch("rank-1 view y", &v.x, &v.y, &y), None);
    let mut dx = vec![f32::NAN; v.x.len()];
    let (mut dmin, mut dmax) = (vec![0.0; mins.len()], vec![0.0; mins.len()]);
    fake_quant_per_channel_grad(&v.g, &v.x, &mins, &maxs, p, &mut dx, &mut dmin, &mut dmax);
    assert_eq!(first_mismatch("rank-1 view dx", &v.x, &v.dx, &dx), None);
    let folded: f32 = dmin.iter().skip(1).step_by(channels).sum();
    let (below, _) = magnitudes(case, &v, p);
    assert_eq!(
        check_sum(
            "folded dmin[1]",
            v.dmin.as_ref().unwrap()[1],
            folded,
            below[1]
        ),
        None
    );
}
