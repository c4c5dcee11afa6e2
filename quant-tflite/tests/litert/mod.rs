//! Running quant's integer models in LiteRT and comparing the integers.
//!
//! The models are written with [`quant_tflite::write`], their inputs as
//! `.npy` files, and one Python process (`tools/litert/run_models.py`) runs
//! the whole batch under the requested kernel sets. The Python comes from
//! `QUANT_LITERT_PYTHON` (`cargo xtask test` sets it to
//! `target/litert-venv/bin/python`); without it the tests print a note and
//! pass, except under CI (the `CI` variable set), where they fail.

pub mod models;

use ndarray::ArrayD;
use quant_core::integer::IntModel;
use quant_core::{DType, Tensor};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// LiteRT's kernel sets (reference-semantics §7.10.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resolver {
    /// `BUILTIN_REF`: the reference kernels (R), the definition quant follows.
    Ref,
    /// `BUILTIN_WITHOUT_DEFAULT_DELEGATES`: the builtin optimized kernels (B).
    Builtin,
    /// A plain interpreter: builtin kernels plus XNNPACK (X).
    Default,
}

impl Resolver {
    /// The three kernel sets.
    pub const ALL: [Resolver; 3] = [Resolver::Ref, Resolver::Builtin, Resolver::Default];

    /// The runner's name for it.
    pub fn key(self) -> &'static str {
        match self {
            Resolver::Ref => "ref",
            Resolver::Builtin => "builtin",
            Resolver::Default => "default",
        }
    }

    /// One letter, as reference-semantics §7.10 writes it.
    pub fn letter(self) -> char {
        match self {
            Resolver::Ref => 'R',
            Resolver::Builtin => 'B',
            Resolver::Default => 'X',
        }
    }
}

/// One model and the inputs to run it on.
pub struct Case {
    /// Unique name (used in file names).
    pub name: String,
    /// What it tests, for the summary (e.g. `CONV_2D u8`).
    pub group: String,
    /// The model.
    pub model: IntModel,
    /// One tensor per model input, in order (integer inputs carry their
    /// quantization parameters).
    pub inputs: Vec<Tensor>,
}

/// Why a model produced no outputs under one kernel set.
#[derive(Clone, Debug)]
pub struct RunError {
    /// `write`, `read`, `load`, `resize`, `allocate`, `set_input`, `invoke`,
    /// `output` or `crash`.
    pub stage: String,
    /// The message.
    pub error: String,
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.stage, self.error)
    }
}

/// The outputs of every case under every requested kernel set.
pub type Results = Vec<BTreeMap<Resolver, Result<Vec<Tensor>, RunError>>>;

/// LiteRT's Python, or `None` (after printing why) when the LiteRT tests
/// should be skipped. Panics under CI when `QUANT_LITERT_PYTHON` is unset.
pub fn python() -> Option<PathBuf> {
    match std::env::var_os("QUANT_LITERT_PYTHON") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "QUANT_LITERT_PYTHON is not set, and CI is: run the tests through \
                 `cargo xtask test`, which creates target/litert-venv and sets it"
            );
            eprintln!(
                "note: skipping the LiteRT comparison: QUANT_LITERT_PYTHON is not set \
                 (`cargo xtask test` sets it)"
            );
            None
        }
    }
}

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lies inside the workspace")
        .to_path_buf()
}

fn err(stage: &str, error: impl fmt::Display) -> RunError {
    RunError {
        stage: stage.to_string(),
        error: error.to_string(),
    }
}

/// Writes `tensor` as a `.npy` file.
pub fn write_npy(path: &Path, tensor: &Tensor) -> Result<(), String> {
    fn write<T: quant_core::tensor::Element + ndarray_npy::WritableElement>(
        path: &Path,
        tensor: &Tensor,
    ) -> Result<(), String> {
        let array = tensor.array::<T>().map_err(|e| e.to_string())?;
        ndarray_npy::write_npy(path, array).map_err(|e| format!("{}: {e}", path.display()))
    }
    match tensor.dtype() {
        DType::F32 => write::<f32>(path, tensor),
        DType::I32 => write::<i32>(path, tensor),
        DType::U8 => write::<u8>(path, tensor),
        DType::I8 => write::<i8>(path, tensor),
        other => Err(format!("cannot write a {other:?} tensor as .npy")),
    }
}

/// Reads a `.npy` file holding `dtype` elements.
pub fn read_npy(path: &Path, dtype: DType) -> Result<Tensor, String> {
    fn read<T: quant_core::tensor::Element + ndarray_npy::ReadableElement>(
        path: &Path,
    ) -> Result<Tensor, String> {
        let array: ArrayD<T> =
            ndarray_npy::read_npy(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Tensor::from_array(array))
    }
    match dtype {
        DType::F32 => read::<f32>(path),
        DType::I32 => read::<i32>(path),
        DType::U8 => read::<u8>(path),
        DType::I8 => read::<i8>(path),
        other => Err(format!("cannot read {other:?} from .npy")),
    }
}

/// Runs every case under `resolvers` in LiteRT (one Python process, started
/// again after a model that kills it), with one thread.
pub fn run_litert(python: &Path, cases: &[Case], resolvers: &[Resolver]) -> Results {
    let dir = tempfile::tempdir().expect("creating a temporary directory");
    let mut results: Results = vec![BTreeMap::new(); cases.len()];
    let mut jobs = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let bytes = match quant_tflite::write(&case.model) {
            Ok(b) => b,
            Err(e) => {
                for &r in resolvers {
                    results[i].insert(r, Err(err("write", &e)));
                }
                continue;
            }
        };
        let model_path = dir.path().join(format!("{}.tflite", case.name));
        std::fs::write(&model_path, bytes).expect("writing a model file");
        let mut inputs = Vec::new();
        for (k, t) in case.inputs.iter().enumerate() {
            let p = dir.path().join(format!("{}.in{k}.npy", case.name));
            write_npy(&p, t).expect("writing an input .npy");
            inputs.push(p);
        }
        jobs.push((i, model_path, inputs));
    }
    let script = workspace_root().join("tools/litert/run_models.py");
    let mut start = 0;
    while start < jobs.len() {
        let pending = &jobs[start..];
        let models: Vec<Value> = pending
            .iter()
            .map(|(i, model, inputs)| {
                json!({
                    "name": cases[*i].name,
                    "path": model,
                    "inputs": inputs,
                    "resolvers": resolvers.iter().map(|r| r.key()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let job_path = dir.path().join(format!("job{start}.json"));
        let result_path = dir.path().join(format!("result{start}.jsonl"));
        std::fs::write(
            &job_path,
            serde_json::to_vec(&json!({"num_threads": 1, "models": models})).unwrap(),
        )
        .expect("writing the job file");
        let out = Command::new(python)
            .arg(&script)
            .arg(&job_path)
            .arg("--out")
            .arg(dir.path())
            .arg("--result")
            .arg(&result_path)
            .output()
            .unwrap_or_else(|e| panic!("running {} {}: {e}", python.display(), script.display()));
        let text = std::fs::read_to_string(&result_path).unwrap_or_default();
        let mut by_name = BTreeMap::new();
        let mut last_started = None;
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).expect("run_models.py writes JSON lines");
            if let Some(name) = v["started"].as_str() {
                last_started = Some(name.to_string());
            } else if let Some(name) = v["name"].as_str() {
                by_name.insert(name.to_string(), v["runs"].clone());
                last_started = None;
            }
        }
        let mut next = jobs.len();
        for (pos, (i, _, _)) in pending.iter().enumerate() {
            let case = &cases[*i];
            if let Some(runs) = by_name.get(&case.name) {
                for &r in resolvers {
                    results[*i].insert(r, parse_run(&runs[r.key()], &case.model));
                }
            } else if last_started.as_deref() == Some(case.name.as_str()) {
                let why = format!(
                    "the LiteRT process died ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                for &r in resolvers {
                    results[*i].insert(r, Err(err("crash", &why)));
                }
                next = start + pos + 1;
                break;
            } else {
                panic!(
                    "run_models.py stopped before {} ({}): {}",
                    case.name,
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        start = next;
    }
    results
}

fn parse_run(run: &Value, model: &IntModel) -> Result<Vec<Tensor>, RunError> {
    if run["ok"].as_bool() != Some(true) {
        return Err(err(
            run["stage"].as_str().unwrap_or("?"),
            run["error"].as_str().unwrap_or("no result"),
        ));
    }
    let files = run["outputs"].as_array().cloned().unwrap_or_default();
    if files.len() != model.outputs.len() {
        return Err(err(
            "output",
            format!(
                "{} outputs, the model has {}",
                files.len(),
                model.outputs.len()
            ),
        ));
    }
    files
        .iter()
        .zip(&model.outputs)
        .map(|(f, &t)| {
            let path = PathBuf::from(f.as_str().unwrap_or_default());
            read_npy(&path, model.tensors[t].dtype).map_err(|e| err("output", e))
        })
        .collect()
}

/// How two outputs compare, element by element.
#[derive(Clone, Debug, Default)]
pub struct Diff {
    /// Elements compared.
    pub elements: usize,
    /// Elements that differ (all of them when the shapes differ).
    pub differ: usize,
    /// The largest absolute difference (integers; `f64::INFINITY` on a
    /// shape or dtype mismatch).
    pub max_abs: f64,
    /// The first differing element: (flat index, ours, theirs).
    pub first: Option<(usize, f64, f64)>,
}

/// Compares two tensors exactly: integers by value, floats bit for bit.
pub fn diff(ours: &Tensor, theirs: &Tensor) -> Diff {
    let n = theirs.len();
    if ours.shape() != theirs.shape() || ours.dtype() != theirs.dtype() {
        return Diff {
            elements: n,
            differ: n.max(1),
            max_abs: f64::INFINITY,
            first: None,
        };
    }
    let (a, b) = (ours.to_f64_vec(), theirs.to_f64_vec());
    let mut d = Diff {
        elements: n,
        ..Diff::default()
    };
    for (i, (&x, &y)) in a.iter().zip(&b).enumerate() {
        let same = if ours.dtype() == DType::F32 {
            (x as f32).to_bits() == (y as f32).to_bits()
        } else {
            x == y
        };
        if !same {
            d.differ += 1;
            d.max_abs = d.max_abs.max((x - y).abs());
            d.first.get_or_insert((i, x, y));
        }
    }
    d
}

/// Compares all outputs of one model; `None` when the counts differ.
pub fn diff_all(ours: &[Tensor], theirs: &[Tensor]) -> Option<Diff> {
    if ours.len() != theirs.len() {
        return None;
    }
    let mut total = Diff::default();
    for (a, b) in ours.iter().zip(theirs) {
        let d = diff(a, b);
        if total.first.is_none() {
            total.first = d.first.map(|(i, x, y)| (total.elements + i, x, y));
        }
        total.elements += d.elements;
        total.differ += d.differ;
        total.max_abs = total.max_abs.max(d.max_abs);
    }
    Some(total)
}

/// A short description of a model: its ops with options and its tensors
/// with dtype, shape and quantization (constants without their values).
pub fn describe(model: &IntModel) -> String {
    let mut s = String::new();
    for op in &model.ops {
        s.push_str(&format!(
            "  op {:?} inputs {:?} outputs {:?}\n",
            op.kind, op.inputs, op.outputs
        ));
    }
    for (i, t) in model.tensors.iter().enumerate() {
        let data = match &t.data {
            Some(d) if d.len() <= 16 => format!(" = {:?}", d.to_f64_vec()),
            Some(_) => " (constant)".to_string(),
            None => String::new(),
        };
        let quant = t.quant.as_ref().map_or(String::new(), |q| {
            format!(
                " scales {:?} zero_points {:?} axis {:?}",
                q.scales, q.zero_points, q.axis
            )
        });
        s.push_str(&format!(
            "  t{i} {} {:?} {:?}{quant}{data}\n",
            t.name, t.dtype, t.shape
        ));
    }
    s
}

/// Saves a case (model and inputs) under `dir/<name>.*` for a failure report.
pub fn save_case(dir: &Path, case: &Case) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let bytes = quant_tflite::write(&case.model).map_err(|e| e.to_string())?;
    let path = dir.join(format!("{}.tflite", case.name));
    std::fs::write(&path, bytes).map_err(|e| format!("{}: {e}", path.display()))?;
    for (k, t) in case.inputs.iter().enumerate() {
        write_npy(&dir.join(format!("{}.in{k}.npy", case.name)), t)?;
    }
    Ok(())
}
