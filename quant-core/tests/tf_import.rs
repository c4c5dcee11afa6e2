//! TensorFlow GraphDef import checked against graphs that TensorFlow itself
//! wrote (`fixtures/tf/*`, made by `tools/fixtures/make_tf_fixtures.py`):
//! node and op counts are TensorFlow's, `.pb` and `.pbtxt` agree, and the
//! graph survives a JSON round trip unchanged.

use quant_core::serialize::{json, read_graph};
use quant_core::{AttrValue, Graph, OpRegistry, Shape};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .expect("fixtures/tf exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("graph.pb").exists())
        .collect();
    dirs.sort();
    assert!(
        dirs.len() >= 8,
        "expected the TF fixture graphs in {}",
        root.display()
    );
    dirs
}

#[derive(serde::Deserialize)]
struct Meta {
    nodes: usize,
    ops: BTreeMap<String, usize>,
}

fn op_counts(g: &Graph) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for (_, n) in g.nodes() {
        *counts.entry(n.op().to_string()).or_default() += 1;
    }
    counts
}

#[test]
fn node_and_op_counts_are_tensorflows() {
    let registry = OpRegistry::builtin();
    for dir in fixtures() {
        let meta: Meta =
            serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
        for file in ["graph.pb", "graph.pbtxt"] {
            let g = read_graph(&dir.join(file), registry).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(g.len(), meta.nodes, "{}/{file}", dir.display());
            assert_eq!(op_counts(&g), meta.ops, "{}/{file}", dir.display());
            assert!(
                g.unknown_ops(registry).is_empty(),
                "{}/{file} has unknown ops",
                dir.display()
            );
        }
    }
}

#[test]
fn binary_and_text_graphdefs_import_identically_and_round_trip_through_json() {
    let registry = OpRegistry::builtin();
    for dir in fixtures() {
        let pb = read_graph(&dir.join("graph.pb"), registry).unwrap();
        let pbtxt = read_graph(&dir.join("graph.pbtxt"), registry).unwrap();
        assert_eq!(pb, pbtxt, "{}", dir.display());
        let text = json::to_json(&pb);
        let back = json::from_json(&text, registry).unwrap();
        assert_eq!(back, pb, "{}", dir.display());
        assert_eq!(
            json::to_json(&back),
            text,
            "JSON is stable for {}",
            dir.display()
        );
    }
}

#[test]
fn shapes_are_inferred_through_the_whole_cnn() {
    let g = read_graph(&fixtures_dir("cnn").join("graph.pb"), OpRegistry::builtin()).unwrap();
    let shape = |name: &str| g.by_name(name).unwrap().outputs()[0].shape.clone().unwrap();
    assert_eq!(shape("logits/BiasAdd"), Shape::known(&[2, 10]));
    assert_eq!(shape("Softmax"), Shape::known(&[2, 10]));
    let bn = g
        .nodes()
        .find(|(_, n)| n.op() == "FusedBatchNormV3")
        .unwrap()
        .1;
    assert_eq!(bn.outputs().len(), 6);
    assert_eq!(bn.attr("is_training"), Some(&AttrValue::Bool(false)));
}

#[test]
fn const_tensors_match_the_tensorflow_values() {
    // The conv fixture's output before BN is conv(input, w); check the
    // decoded weights against TF's own result by a direct convolution.
    let dir = fixtures_dir("conv_bn_relu6");
    let g = read_graph(&dir.join("graph.pb"), OpRegistry::builtin()).unwrap();
    let conv = g.nodes().find(|(_, n)| n.op() == "Conv2D").unwrap().1;
    let w_node = g.node(conv.inputs()[1].node);
    let w = match w_node.attr("value") {
        Some(AttrValue::Tensor(t)) => t.array::<f32>().unwrap().clone(),
        other => panic!("weights are not a Const tensor: {other:?}"),
    };
    let x: ndarray::ArrayD<f32> = ndarray_npy::read_npy(dir.join("input.npy")).unwrap();
    let y: ndarray::ArrayD<f32> = ndarray_npy::read_npy(dir.join("conv.npy")).unwrap();
    let strides = conv.attr_ints("strides").unwrap();
    assert_eq!(conv.attr_str("padding").unwrap(), "SAME");
    let (kh, kw, cin, cout) = (w.shape()[0], w.shape()[1], w.shape()[2], w.shape()[3]);
    let (n, h, wd) = (x.shape()[0], x.shape()[1], x.shape()[2]);
    let (sh, sw) = (strides[1] as usize, strides[2] as usize);
    let (oh, ow) = (y.shape()[1], y.shape()[2]);
    let pad_h = ((oh - 1) * sh + kh).saturating_sub(h) / 2;
    let pad_w = ((ow - 1) * sw + kw).saturating_sub(wd) / 2;
    let mut worst = 0f64;
    for b in 0..n {
        for i in 0..oh {
            for j in 0..ow {
                for o in 0..cout {
                    let mut acc = 0f64;
                    for di in 0..kh {
                        for dj in 0..kw {
                            let (yi, xj) = (
                                (i * sh + di) as isize - pad_h as isize,
                                (j * sw + dj) as isize - pad_w as isize,
                            );
                            if yi < 0 || xj < 0 || yi >= h as isize || xj >= wd as isize {
                                continue;
                            }
                            for c in 0..cin {
                                acc += f64::from(x[[b, yi as usize, xj as usize, c]])
                                    * f64::from(w[[di, dj, c, o]]);
                            }
                        }
                    }
                    worst = worst.max((acc - f64::from(y[[b, i, j, o]])).abs());
                }
            }
        }
    }
    assert!(worst < 1e-4, "max abs difference {worst}");
}

fn fixtures_dir(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/tf")
        .join(name)
}
