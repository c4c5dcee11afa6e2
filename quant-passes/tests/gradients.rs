//! The `gradients` pass, checked from outside: every rule against central
//! differences of the executed forward graph (accumulated in f64 around the
//! f32 evaluation, 1e-3 relative tolerance), the fake quants against
//! TensorFlow's own gradients, accumulation over several consumers, the
//! typed errors, and which variables are trainable.

use ndarray::ArrayD;
use ndarray_npy::read_npy;
use quant_core::builder::{GraphBuilder, Padding};
use quant_core::{AttrValue, Attrs, DType, Graph, GraphError, OutletId, Shape, Tensor, attrs};
use quant_kernels::session::Session;
use quant_passes::{
    GradientOptions, PassError, gradients, gradients_with_seeds, trainable_variables,
};
use std::path::Path;

/// A small deterministic generator.
struct Rng(u64);
impl Rng {
    fn uniform(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn tensor(&mut self, shape: &[usize], scale: f32, offset: f32) -> Tensor {
        let n = shape.iter().product();
        let v = (0..n).map(|_| self.uniform() * scale + offset).collect();
        Tensor::from_vec(shape, v).unwrap()
    }
}

/// One input of a checked graph: a placeholder fed with `value`,
/// differentiated when `diff`.
struct Input {
    name: &'static str,
    value: Tensor,
    diff: bool,
}

fn input(name: &'static str, value: Tensor) -> Input {
    Input {
        name,
        value,
        diff: true,
    }
}

fn fixed(name: &'static str, value: Tensor) -> Input {
    Input {
        name,
        value,
        diff: false,
    }
}

fn dot(a: &Tensor, b: &Tensor) -> f64 {
    a.to_f64_vec()
        .iter()
        .zip(b.to_f64_vec())
        .map(|(x, y)| x * y)
        .sum()
}

/// Builds `ys = build(placeholders)`, seeds each `y` with a random upstream
/// gradient `g`, runs the pass, and compares the gradient of every
/// differentiated input with central differences of `L = Σ g·y` (step `h`).
/// Returns the largest relative error.
fn check(
    name: &str,
    inputs: Vec<Input>,
    h: f32,
    build: impl Fn(&mut GraphBuilder<'_>, &[OutletId]) -> Result<Vec<OutletId>, GraphError>,
) -> f64 {
    check_with(name, inputs, h, false, build)
}

/// [`check`], with the placeholders' first dimension unknown when
/// `dynamic_batch` (so the pass must use runtime shapes).
fn check_with(
    name: &str,
    inputs: Vec<Input>,
    h: f32,
    dynamic_batch: bool,
    build: impl Fn(&mut GraphBuilder<'_>, &[OutletId]) -> Result<Vec<OutletId>, GraphError>,
) -> f64 {
    let mut rng = Rng(0x5eed ^ name.len() as u64);
    let mut b = GraphBuilder::new();
    let phs: Vec<OutletId> = inputs
        .iter()
        .map(|i| {
            let mut shape = Shape::known(i.value.shape());
            if dynamic_batch && i.diff && shape.rank() > 0 {
                shape.0[0] = None;
            }
            b.placeholder(i.name, i.value.dtype(), shape).unwrap()
        })
        .collect();
    let ys = build(&mut b, &phs).unwrap_or_else(|e| panic!("{name}: {e}"));
    let mut graph = b.finish();
    let mut seeds = Vec::new();
    let mut gs = Vec::new();
    let batch = inputs[0].value.shape().first().copied();
    for (k, &y) in ys.iter().enumerate() {
        let mut shape = graph.fact(y).shape.clone().unwrap();
        if dynamic_batch && shape.rank() > 0 && shape.0[0].is_none() {
            shape.0[0] = batch;
        }
        let shape = shape.as_known().unwrap();
        let g = rng.tensor(&shape, 1.0, 0.0);
        let mut gb = GraphBuilder::extend(graph, quant_core::OpRegistry::builtin());
        let gid = gb.constant(&format!("upstream_{k}"), g.clone()).unwrap();
        graph = gb.finish();
        seeds.push((y, gid));
        gs.push(g);
    }
    let xs: Vec<OutletId> = phs
        .iter()
        .zip(&inputs)
        .filter(|(_, i)| i.diff)
        .map(|(p, _)| *p)
        .collect();
    let grads = gradients_with_seeds(&mut graph, &seeds, &xs, &GradientOptions::default())
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let y_names: Vec<String> = ys.iter().map(|&y| graph.outlet_name(y)).collect();
    let grad_names: Vec<String> = grads
        .iter()
        .map(|g| graph.outlet_name(g.unwrap_or_else(|| panic!("{name}: no gradient"))))
        .collect();
    let mut session = Session::new(graph).unwrap();
    let feeds = |values: &[Tensor]| -> Vec<(&str, Tensor)> {
        inputs
            .iter()
            .zip(values)
            .map(|(i, v)| (i.name, v.clone()))
            .collect()
    };
    let base: Vec<Tensor> = inputs.iter().map(|i| i.value.clone()).collect();
    let fetch: Vec<&str> = grad_names.iter().map(String::as_str).collect();
    let analytic = session
        .run(&feeds(&base), &fetch)
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let y_fetch: Vec<&str> = y_names.iter().map(String::as_str).collect();
    let mut loss = |values: &[Tensor]| -> f64 {
        let ys = session.run(&feeds(values), &y_fetch).unwrap();
        ys.iter().zip(&gs).map(|(y, g)| dot(y, g)).sum()
    };
    let mut worst = 0f64;
    let mut k = 0;
    for (i, inp) in inputs.iter().enumerate() {
        if !inp.diff {
            continue;
        }
        let x = inp.value.array::<f32>().unwrap();
        let mut numeric = Vec::with_capacity(x.len());
        for j in 0..x.len() {
            let mut values = base.clone();
            let mut shifted = |delta: f32| {
                let mut p = x.clone();
                p.as_slice_mut().unwrap()[j] += delta;
                values[i] = Tensor::from_array(p);
                loss(&values)
            };
            let (up, down) = (shifted(h), shifted(-h));
            numeric.push((up - down) / (2.0 * f64::from(h)));
        }
        let got = analytic[k].to_f64_vec();
        assert_eq!(got.len(), numeric.len(), "{name}/{}: shape", inp.name);
        let scale = numeric.iter().fold(0f64, |m, v| m.max(v.abs())).max(1e-6);
        let err = got
            .iter()
            .zip(&numeric)
            .fold(0f64, |m, (a, n)| m.max((a - n).abs()))
            / scale;
        assert!(
            err < 1e-3,
            "{name}/{}: relative error {err:e}\n analytic {got:?}\n numeric {numeric:?}",
            inp.name
        );
        worst = worst.max(err);
        k += 1;
    }
    eprintln!("{name}: largest relative error {worst:.1e}");
    worst
}

/// Values at least `gap` away from every listed kink.
fn away_from(t: Tensor, kinks: &[f32], gap: f32) -> Tensor {
    let a = t.array::<f32>().unwrap().mapv(|v| {
        if kinks.iter().any(|k| (v - k).abs() < gap) {
            v + 2.5 * gap
        } else {
            v
        }
    });
    Tensor::from_array(a)
}

#[test]
fn binary_ops_with_broadcasting() {
    let mut rng = Rng(1);
    let shapes: [(&[usize], &[usize]); 5] = [
        (&[2, 3, 4], &[4]),
        (&[2, 1, 4], &[3, 1]),
        (&[4], &[2, 3, 4]),
        (&[2, 3], &[]),
        (&[2, 3], &[2, 3]),
    ];
    for op in [
        "Add",
        "AddV2",
        "Sub",
        "Mul",
        "RealDiv",
        "Maximum",
        "Minimum",
        "SquaredDifference",
    ] {
        for (sa, sb) in shapes {
            // On grids 0.05 apart, so Maximum and Minimum have no near
            // ties; positive divisors away from zero.
            let grid = |t: Tensor, shift: f32| {
                Tensor::from_array(
                    t.array::<f32>()
                        .unwrap()
                        .mapv(|v| (v * 10.0).round() / 10.0 + shift),
                )
            };
            let a = grid(rng.tensor(sa, 1.0, 0.0), 0.05);
            let b = grid(rng.tensor(sb, 0.5, 1.0), 0.0);
            let name = format!("{op} {sa:?} {sb:?}");
            check(&name, vec![input("a", a), input("b", b)], 1e-2, |b, x| {
                Ok(vec![b.binary(op, "y", x[0], x[1])?])
            });
        }
    }
}

#[test]
fn pow_with_respect_to_its_base() {
    let mut rng = Rng(2);
    let a = rng.tensor(&[2, 3], 0.5, 1.5);
    let e = rng.tensor(&[3], 1.0, 0.0);
    check("Pow", vec![input("a", a), fixed("e", e)], 1e-2, |b, x| {
        Ok(vec![b.binary("Pow", "y", x[0], x[1])?])
    });
}

#[test]
fn unary_ops() {
    let mut rng = Rng(3);
    let x = rng.tensor(&[3, 5], 2.0, 0.0);
    let positive = rng.tensor(&[3, 5], 1.0, 2.0);
    let cases = [
        ("Neg", x.clone()),
        ("Square", x.clone()),
        ("Sigmoid", x.clone()),
        ("Tanh", x.clone()),
        ("Identity", x.clone()),
        ("Rsqrt", positive.clone()),
        ("Sqrt", positive),
        ("Relu", away_from(x.clone(), &[0.0], 0.05)),
        (
            "Relu6",
            away_from(rng.tensor(&[3, 5], 5.0, 3.0), &[0.0, 6.0], 0.05),
        ),
        ("Softmax", x),
    ];
    for (op, value) in cases {
        check(op, vec![input("x", value)], 1e-2, |b, x| {
            Ok(vec![b.unary(op, "y", x[0])?])
        });
    }
}

#[test]
fn matmul_for_every_transpose() {
    let mut rng = Rng(4);
    for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
        let a = rng.tensor(if ta { &[4, 3] } else { &[3, 4] }, 1.0, 0.0);
        let w = rng.tensor(if tb { &[5, 4] } else { &[4, 5] }, 1.0, 0.0);
        check(
            &format!("MatMul ta={ta} tb={tb}"),
            vec![input("a", a), input("b", w)],
            1e-2,
            |b, x| Ok(vec![b.matmul("y", x[0], x[1], ta, tb)?]),
        );
    }
}

#[test]
fn bias_add_and_its_bias() {
    let mut rng = Rng(5);
    check(
        "BiasAdd",
        vec![
            input("x", rng.tensor(&[2, 3, 3, 4], 1.0, 0.0)),
            input("bias", rng.tensor(&[4], 1.0, 0.0)),
        ],
        1e-2,
        |b, x| Ok(vec![b.bias_add("y", x[0], x[1])?]),
    );
}

#[test]
fn convolutions() {
    let mut rng = Rng(6);
    for (stride, padding) in [(1, Padding::Same), (2, Padding::Same), (2, Padding::Valid)] {
        check(
            &format!("Conv2D s{stride} {padding:?}"),
            vec![
                input("x", rng.tensor(&[2, 5, 5, 3], 1.0, 0.0)),
                input("w", rng.tensor(&[3, 3, 3, 4], 0.5, 0.0)),
            ],
            1e-2,
            |b, x| {
                Ok(vec![b.conv2d(
                    "y",
                    x[0],
                    x[1],
                    [stride, stride],
                    padding,
                )?])
            },
        );
        check(
            &format!("DepthwiseConv2dNative s{stride} {padding:?}"),
            vec![
                input("x", rng.tensor(&[2, 5, 5, 3], 1.0, 0.0)),
                input("w", rng.tensor(&[3, 3, 3, 2], 0.5, 0.0)),
            ],
            1e-2,
            |b, x| {
                Ok(vec![b.depthwise_conv2d(
                    "y",
                    x[0],
                    x[1],
                    [stride, stride],
                    padding,
                )?])
            },
        );
    }
}

#[test]
fn pooling() {
    let mut rng = Rng(7);
    // Distinct values, so every max-pool window has a clear maximum.
    let mut values: Vec<f32> = (0..2 * 6 * 6 * 2).map(|i| i as f32 * 0.1).collect();
    for i in (1..values.len()).rev() {
        let j = ((rng.uniform() + 1.0) * 0.5 * i as f32) as usize % (i + 1);
        values.swap(i, j);
    }
    let x = Tensor::from_vec(&[2, 6, 6, 2], values).unwrap();
    for (size, stride, padding) in [(2, 2, Padding::Valid), (3, 2, Padding::Same)] {
        for op in ["MaxPool", "AvgPool"] {
            check(
                &format!("{op} {size}/{stride} {padding:?}"),
                vec![input("x", x.clone())],
                1e-2,
                |b, x| Ok(vec![b.pool(op, "y", x[0], size, stride, padding)?]),
            );
        }
    }
}

#[test]
fn shape_ops_and_reductions() {
    let mut rng = Rng(8);
    let x = rng.tensor(&[2, 3, 4], 1.0, 0.0);
    check("Reshape", vec![input("x", x.clone())], 1e-2, |b, x| {
        Ok(vec![b.reshape("y", x[0], &[4, -1])?])
    });
    // No Squeeze kernel yet: its gradient is a Reshape back to the input shape.
    let mut b = GraphBuilder::new();
    let x1 = b
        .placeholder("x", DType::F32, Shape::known(&[2, 1, 3]))
        .unwrap();
    let a = attrs([("squeeze_dims", AttrValue::Ints(vec![1]))]);
    let sq = b.add("Squeeze", "y", &[x1], a).unwrap();
    let g = b.constant("g", rng.tensor(&[2, 3], 1.0, 0.0)).unwrap();
    let mut graph = b.finish();
    let d = gradients_with_seeds(
        &mut graph,
        &[(sq.into(), g)],
        &[x1],
        &GradientOptions::default(),
    )
    .unwrap()[0]
        .unwrap();
    let r = graph.node(d.node);
    assert_eq!((r.op(), r.inputs()[0]), ("Reshape", g));
    assert_eq!(graph.fact(d).shape, Some(Shape::known(&[2, 1, 3])));
    for keep in [false, true] {
        for axes in [&[1][..], &[0, 2], &[-1]] {
            check(
                &format!("Mean {axes:?} keep={keep}"),
                vec![input("x", x.clone())],
                1e-2,
                |b, x| Ok(vec![b.mean("y", x[0], axes, keep)?]),
            );
            check(
                &format!("Sum {axes:?} keep={keep}"),
                vec![input("x", x.clone())],
                1e-2,
                |b, x| {
                    let t = Tensor::from_vec(&[axes.len()], axes.to_vec()).unwrap();
                    let a = b.constant("axes", t)?;
                    let k = attrs([("keep_dims", keep.into())]);
                    Ok(vec![b.add("Sum", "y", &[x[0], a], k)?.into()])
                },
            );
        }
    }
}

#[test]
fn cross_entropies() {
    let mut rng = Rng(9);
    let logits = rng.tensor(&[4, 5], 2.0, 0.0);
    let labels = Tensor::from_vec(&[4], vec![0i32, 3, 4, 1]).unwrap();
    check(
        "SparseSoftmaxCrossEntropyWithLogits",
        vec![input("logits", logits.clone()), fixed("labels", labels)],
        1e-2,
        |b, x| {
            let id = b.add(
                "SparseSoftmaxCrossEntropyWithLogits",
                "xent",
                &[x[0], x[1]],
                Attrs::new(),
            )?;
            Ok(vec![id.into()])
        },
    );
    let mut p = rng.tensor(&[4, 5], 0.5, 0.5);
    let rows: Vec<f32> = p
        .array::<f32>()
        .unwrap()
        .rows()
        .into_iter()
        .flat_map(|r| {
            let s: f32 = r.sum();
            r.mapv(|v| v / s).to_vec()
        })
        .collect();
    p = Tensor::from_vec(&[4, 5], rows).unwrap();
    check(
        "SoftmaxCrossEntropyWithLogits",
        vec![input("logits", logits), fixed("labels", p)],
        1e-2,
        |b, x| {
            let id = b.add(
                "SoftmaxCrossEntropyWithLogits",
                "xent",
                &[x[0], x[1]],
                Attrs::new(),
            )?;
            Ok(vec![id.into()])
        },
    );
}

#[test]
fn fused_batch_norm_training_with_and_without_the_statistics() {
    let mut rng = Rng(10);
    let x = rng.tensor(&[2, 3, 3, 4], 1.5, 0.3);
    let scale = rng.tensor(&[4], 0.5, 1.0);
    let offset = rng.tensor(&[4], 0.5, 0.0);
    let bn = |outputs: &'static [usize]| {
        move |b: &mut GraphBuilder<'_>, x: &[OutletId]| -> Result<Vec<OutletId>, GraphError> {
            let e1 = b.constant("mean", Tensor::zeros(DType::F32, &[0]).unwrap())?;
            let e2 = b.constant("var", Tensor::zeros(DType::F32, &[0]).unwrap())?;
            let id = b.fused_batch_norm("bn", x[0], x[1], x[2], e1, e2, 0.001, true)?;
            Ok(outputs.iter().map(|&k| OutletId::new(id, k)).collect())
        }
    };
    let inputs = || {
        vec![
            input("x", x.clone()),
            input("scale", scale.clone()),
            input("offset", offset.clone()),
        ]
    };
    check("FusedBatchNormV3 y", inputs(), 1e-2, bn(&[0]));
    check(
        "FusedBatchNormV3 y, mean, var",
        inputs(),
        1e-2,
        bn(&[0, 1, 2]),
    );
    // Statistics only (the folded training graph of §2.6): x alone.
    check(
        "FusedBatchNormV3 mean, var",
        vec![
            input("x", x.clone()),
            fixed("scale", scale.clone()),
            fixed("offset", offset.clone()),
        ],
        1e-2,
        bn(&[1, 2]),
    );
}

#[test]
fn fused_batch_norm_inference() {
    let mut rng = Rng(11);
    check(
        "FusedBatchNormV3 inference",
        vec![
            input("x", rng.tensor(&[2, 3, 3, 4], 1.5, 0.3)),
            input("scale", rng.tensor(&[4], 0.5, 1.0)),
            input("offset", rng.tensor(&[4], 0.5, 0.0)),
            fixed("mean", rng.tensor(&[4], 0.5, 0.0)),
            fixed("var", rng.tensor(&[4], 0.5, 1.0)),
        ],
        1e-2,
        |b, x| {
            let id = b.fused_batch_norm("bn", x[0], x[1], x[2], x[3], x[4], 0.001, false)?;
            Ok(vec![id.into()])
        },
    );
}

/// The fake quants' gradients (x straight through, `dmin`, `dmax`) equal
/// TensorFlow's on its own vectors (`fixtures/tf/fake_quant_vectors`).
#[test]
fn fake_quant_gradients_match_tensorflow() {
    #[derive(serde::Deserialize)]
    struct Case {
        name: String,
        op: String,
        num_bits: i64,
        narrow_range: bool,
        min_file: String,
        max_file: String,
        x: String,
        g: String,
        dx: String,
        dmin: Option<String>,
        dmax: Option<String>,
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/fake_quant_vectors");
    let cases: Vec<Case> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("cases.json")).unwrap()).unwrap();
    let load = |f: &str| Tensor::from_array(read_npy::<_, ArrayD<f32>>(dir.join(f)).unwrap());
    for case in &cases {
        let (x, g) = (load(&case.x), load(&case.g));
        let (lo, hi) = (load(&case.min_file), load(&case.max_file));
        let mut b = GraphBuilder::new();
        let xp = b
            .placeholder("x", DType::F32, Shape::known(x.shape()))
            .unwrap();
        let mut a = attrs([
            ("num_bits", AttrValue::Int(case.num_bits)),
            ("narrow_range", case.narrow_range.into()),
        ]);
        let (y, xs) = if case.op == "args" {
            let scalar = |t: &Tensor| t.array::<f32>().unwrap().iter().copied().next().unwrap();
            a.insert("min".into(), scalar(&lo).into());
            a.insert("max".into(), scalar(&hi).into());
            let y = b.add("FakeQuantWithMinMaxArgs", "fq", &[xp], a).unwrap();
            (y, vec![xp])
        } else {
            let op = if case.op == "vars" {
                "FakeQuantWithMinMaxVars"
            } else {
                "FakeQuantWithMinMaxVarsPerChannel"
            };
            let mn = b.placeholder("min", DType::F32, Shape::known(lo.shape()));
            let mx = b.placeholder("max", DType::F32, Shape::known(hi.shape()));
            let (mn, mx) = (mn.unwrap(), mx.unwrap());
            let y = b.add(op, "fq", &[xp, mn, mx], a).unwrap();
            (y, vec![xp, mn, mx])
        };
        let gc = b.constant("g", g).unwrap();
        let mut graph = b.finish();
        let grads = gradients_with_seeds(
            &mut graph,
            &[(y.into(), gc)],
            &xs,
            &GradientOptions::default(),
        )
        .unwrap();
        let names: Vec<String> = grads
            .iter()
            .map(|g| graph.outlet_name(g.unwrap()))
            .collect();
        let mut s = Session::new(graph).unwrap();
        let mut feeds = vec![("x", x)];
        if case.op != "args" {
            feeds.push(("min", lo));
            feeds.push(("max", hi));
        }
        let fetch: Vec<&str> = names.iter().map(String::as_str).collect();
        let got = s.run(&feeds, &fetch).unwrap();
        assert_eq!(got[0], load(&case.dx), "{}: dx", case.name);
        for (k, file) in [(1, &case.dmin), (2, &case.dmax)] {
            let Some(file) = file else { continue };
            let want = load(file).to_f64_vec();
            let have = got[k].to_f64_vec();
            let scale = want.iter().fold(1f64, |m, v| m.max(v.abs()));
            for (h, w) in have.iter().zip(&want) {
                assert!((h - w).abs() <= 1e-5 * scale, "{}: {h} vs {w}", case.name);
            }
        }
    }
}

/// `x` feeds three consumers (two of them through one `Mul(x, x)`): its
/// gradient is their `AddV2` sum.
#[test]
fn several_consumers_accumulate() {
    let mut rng = Rng(12);
    check(
        "accumulation",
        vec![input("x", rng.tensor(&[2, 3], 1.0, 0.0))],
        1e-2,
        |b, x| {
            let sq = b.binary("Mul", "sq", x[0], x[0])?;
            let t = b.unary("Tanh", "t", x[0])?;
            let s = b.binary("AddV2", "s", sq, t)?;
            Ok(vec![s, t])
        },
    );
    let mut b = GraphBuilder::new();
    let x = b.placeholder("x", DType::F32, Shape::known(&[3])).unwrap();
    let sq = b.binary("Mul", "sq", x, x).unwrap();
    let loss = b.mean("loss", sq, &[0], false).unwrap();
    let mut g = b.finish();
    let dx = gradients(&mut g, &[loss], &[x], &GradientOptions::default()).unwrap()[0].unwrap();
    let node = g.node(dx.node);
    assert_eq!(node.op(), "AddV2");
    assert_eq!(node.name(), "gradients/x_grad/AddV2");
    let mut s = Session::new(g.clone()).unwrap();
    let xv = Tensor::from_vec(&[3], vec![1.0f32, -2.0, 0.5]).unwrap();
    let got = s.run(&[("x", xv)], &[&g.outlet_name(dx)]).unwrap();
    // d/dx mean(x²) = 2x/3.
    let want = [2.0 / 3.0, -4.0 / 3.0, 1.0 / 3.0];
    for (a, b) in got[0].to_f64_vec().iter().zip(want) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
}

#[test]
fn names_follow_tensorflow_and_a_second_call_gets_a_new_scope() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[1, 4, 4, 1]))
        .unwrap();
    let w = b
        .variable(
            "conv1/weights",
            Tensor::zeros(DType::F32, &[3, 3, 1, 2]).unwrap(),
            true,
        )
        .unwrap();
    let y = b
        .scope("conv1", |b| b.conv2d("Conv2D", x, w, [1, 1], Padding::Same))
        .unwrap();
    let loss = b.mean("loss", y, &[0, 1, 2, 3], false).unwrap();
    let mut g = b.finish();
    let opts = GradientOptions::default();
    let d = gradients(&mut g, &[loss], &[x, w], &opts).unwrap();
    assert_eq!(
        g.node(d[0].unwrap().node).name(),
        "gradients/conv1/Conv2D_grad/Conv2DBackpropInput"
    );
    assert_eq!(
        g.node(d[1].unwrap().node).name(),
        "gradients/conv1/Conv2D_grad/Conv2DBackpropFilter"
    );
    let again = gradients(&mut g, &[loss], &[w], &opts).unwrap();
    assert!(
        g.node(again[0].unwrap().node)
            .name()
            .starts_with("gradients_1/conv1/Conv2D_grad/"),
    );
}

#[test]
fn unreached_inputs_and_stopped_paths_have_no_gradient() {
    let mut b = GraphBuilder::new();
    let x = b.placeholder("x", DType::F32, Shape::known(&[2])).unwrap();
    let z = b.placeholder("z", DType::F32, Shape::known(&[2])).unwrap();
    let stopped = b.add("StopGradient", "stop", &[x], Attrs::new()).unwrap();
    let y = b.unary("Relu", "y", x).unwrap();
    let s = b.binary("AddV2", "s", y, stopped.into()).unwrap();
    let loss = b.mean("loss", s, &[0], false).unwrap();
    let mut g = b.finish();
    let d = gradients(&mut g, &[loss], &[x, z], &GradientOptions::default()).unwrap();
    assert_eq!(
        g.node(d[0].unwrap().node).op(),
        "ReluGrad",
        "only the Relu path"
    );
    assert_eq!(d[1], None, "z does not reach the loss");
    assert!(
        g.nodes()
            .all(|(_, n)| !n.name().starts_with("gradients/stop_grad"))
    );
}

#[test]
fn assignments_stop_gradients_unless_ranges_are_learnable() {
    // A training-form quantizer: the fake quant reads the assigned ranges.
    let mut b = GraphBuilder::new();
    let x = b.placeholder("x", DType::F32, Shape::known(&[4])).unwrap();
    let (fq, min, max) = b
        .scope("layer/act_quant", |b| {
            let min = b.variable("min", Tensor::scalar(-1.0f32), false)?;
            let max = b.variable("max", Tensor::scalar(1.0f32), false)?;
            let a = b.constant("lo", Tensor::scalar(-1.0f32))?;
            let c = b.constant("hi", Tensor::scalar(1.0f32))?;
            let new_min = b.add("Assign", "AssignMinLast", &[min, a], Attrs::new())?;
            let new_max = b.add("Assign", "AssignMaxLast", &[max, c], Attrs::new())?;
            let fq = b.add(
                "FakeQuantWithMinMaxVars",
                "FakeQuantWithMinMaxVars",
                &[x, new_min.into(), new_max.into()],
                Attrs::new(),
            )?;
            Ok::<_, GraphError>((fq, min, max))
        })
        .unwrap();
    let w = b.variable("w", Tensor::scalar(2.0f32), true).unwrap();
    let y = b.binary("Mul", "y", fq.into(), w).unwrap();
    let loss = b.mean("loss", y, &[0], false).unwrap();
    let graph = b.finish();

    let off = GradientOptions::default();
    let on = GradientOptions {
        learnable_ranges: true,
        ..GradientOptions::default()
    };
    let names = |g: &Graph, ids: Vec<quant_core::NodeId>| -> Vec<String> {
        ids.into_iter()
            .map(|id| g.node(id).name().to_string())
            .collect()
    };
    assert_eq!(
        names(&graph, trainable_variables(&graph, loss, &off)),
        ["w"]
    );
    assert_eq!(
        names(&graph, trainable_variables(&graph, loss, &on)),
        ["layer/act_quant/min", "layer/act_quant/max", "w"]
    );

    let mut g = graph.clone();
    let d = gradients(&mut g, &[loss], &[x, min, max], &off).unwrap();
    assert!(d[0].is_some());
    assert_eq!(&d[1..], [None, None]);

    let mut g = graph.clone();
    let d = gradients(&mut g, &[loss], &[x, min, max], &on).unwrap();
    let fetch: Vec<String> = d.iter().map(|o| g.outlet_name(o.unwrap())).collect();
    let mut s = Session::new(g).unwrap();
    let xv = Tensor::from_vec(&[4], vec![-3.0f32, -0.5, 0.25, 2.0]).unwrap();
    let f: Vec<&str> = fetch.iter().map(String::as_str).collect();
    let got = s.run(&[("x", xv)], &f).unwrap();
    // The range is [-1, 1]; the upstream gradient is w / 4 = 0.5 per
    // element: x passes where inside, dmin and dmax sum it below and above.
    assert_eq!(got[0].to_f64_vec(), [0.0, 0.5, 0.5, 0.0]);
    assert_eq!(got[1].to_f64_vec(), [0.5]);
    assert_eq!(got[2].to_f64_vec(), [0.5]);
}

#[test]
fn missing_rules_and_unknown_shapes_are_typed_errors() {
    let mut b = GraphBuilder::new();
    let x = b
        .placeholder("x", DType::F32, Shape::known(&[2, 3]))
        .unwrap();
    let axes = b
        .constant("axes", Tensor::from_vec(&[1], vec![1i32]).unwrap())
        .unwrap();
    let m = b.add("Max", "max", &[x, axes], Attrs::new()).unwrap();
    let loss = b.mean("loss", m.into(), &[0], false).unwrap();
    let mut g = b.finish();
    let before = g.clone();
    let err = gradients(&mut g, &[loss], &[x], &GradientOptions::default()).unwrap_err();
    assert!(
        matches!(&err, PassError::NoGradient { node, op, .. } if node == "max" && op == "Max"),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "pass gradients: 'max': no gradient is defined for op Max"
    );
    assert_eq!(g, before, "a failed pass leaves the graph as it was");

    // A tensor of unknown rank: the Mean rule cannot tell the reduced axes.
    let mut b = GraphBuilder::new();
    let x = b
        .add(
            "Placeholder",
            "x",
            &[],
            attrs([("dtype", DType::F32.into())]),
        )
        .unwrap();
    let y = b.unary("Relu", "y", x.into()).unwrap();
    let loss = b.mean("loss", y, &[0], false).unwrap();
    let mut g = b.finish();
    let err = gradients(&mut g, &[loss], &[x.into()], &GradientOptions::default()).unwrap_err();
    assert!(matches!(&err, PassError::UnknownShape { .. }), "{err}");
}

/// The gradient of a whole small training network (conv + training-mode
/// fused batch norm with a moving-mean update, depthwise, pooling, a
/// broadcast scale, a transposed dense layer, sparse softmax cross-entropy)
/// with respect to every trainable variable and the input equals
/// TensorFlow's `tf.gradients` (`fixtures/tf/gradients`, made by
/// `tools/fixtures/make_tf_fixtures.py --only gradients`) within 1e-5
/// relative error (the largest error over a tensor, divided by its largest
/// magnitude).
#[test]
fn a_small_network_matches_tensorflow_gradients() {
    #[derive(serde::Deserialize)]
    struct Meta {
        feeds: std::collections::BTreeMap<String, String>,
        loss: String,
        loss_value: f64,
        variables: std::collections::BTreeMap<String, String>,
        trainable: Vec<String>,
        gradients: std::collections::BTreeMap<String, String>,
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tf/gradients");
    let meta: Meta =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("graph.pb")).unwrap();
    let mut graph =
        quant_core::import::tf::import_graph_def(&bytes, quant_core::OpRegistry::builtin())
            .unwrap();
    let loss = graph.outlet(&meta.loss).unwrap();
    let opts = GradientOptions::default();
    let trainable: Vec<String> = trainable_variables(&graph, loss, &opts)
        .into_iter()
        .map(|id| graph.node(id).name().to_string())
        .collect();
    assert_eq!(trainable, meta.trainable);

    let names: Vec<&String> = meta.gradients.keys().collect();
    let xs: Vec<OutletId> = names.iter().map(|n| graph.outlet(n).unwrap()).collect();
    let grads = gradients(&mut graph, &[loss], &xs, &opts).unwrap();
    let fetch: Vec<String> = grads
        .iter()
        .map(|g| graph.outlet_name(g.expect("every x is reached")))
        .collect();
    let mut session = Session::new(graph).unwrap();
    let load = |f: &str| dir.join(f);
    for (name, file) in &meta.variables {
        let value: ArrayD<f32> = read_npy(load(file)).unwrap();
        session
            .set_variable(name, Tensor::from_array(value))
            .unwrap();
    }
    let x: ArrayD<f32> = read_npy(load(&meta.feeds["input"])).unwrap();
    let labels: ArrayD<i32> = read_npy(load(&meta.feeds["labels"])).unwrap();
    let feeds = [
        ("input", Tensor::from_array(x)),
        ("labels", Tensor::from_array(labels)),
    ];
    let mut f: Vec<&str> = fetch.iter().map(String::as_str).collect();
    f.push(&meta.loss);
    let got = session.run(&feeds, &f).unwrap();
    let loss_value = got[got.len() - 1].to_f64_vec()[0];
    assert!(
        (loss_value - meta.loss_value).abs() <= 1e-6 * meta.loss_value.abs(),
        "loss {loss_value} vs TensorFlow's {}",
        meta.loss_value
    );
    let mut worst = 0f64;
    for ((name, ours), file) in names.iter().zip(&got).zip(meta.gradients.values()) {
        let want: ArrayD<f32> = read_npy(load(file)).unwrap();
        assert_eq!(ours.shape(), want.shape(), "{name}");
        let want: Vec<f64> = want.iter().map(|&v| f64::from(v)).collect();
        let scale = want.iter().fold(1e-12f64, |m, v| m.max(v.abs()));
        let err = ours
            .to_f64_vec()
            .iter()
            .zip(&want)
            .fold(0f64, |m, (a, b)| m.max((a - b).abs()))
            / scale;
        eprintln!("{name}: relative error {err:.2e}");
        assert!(
            err <= 1e-5,
            "{name}: relative error {err:e}\n ours {:?}\n want {want:?}",
            ours.to_f64_vec()
        );
        worst = worst.max(err);
    }
    eprintln!("largest relative error {worst:.2e}");
}

#[test]
fn ops_needing_runtime_shapes_or_selects() {
    let mut rng = Rng(13);
    let x = rng.tensor(&[2, 3], 1.0, 0.0);
    let positive = rng.tensor(&[2, 3], 0.5, 1.5);
    for (op, value) in [("Exp", &x), ("Reciprocal", &positive)] {
        check(op, vec![input("x", value.clone())], 1e-2, |b, x| {
            Ok(vec![b.unary(op, "y", x[0])?])
        });
    }
    check(
        "Log",
        vec![input("x", rng.tensor(&[2, 3], 0.5, 1.5))],
        1e-2,
        |b, x| Ok(vec![b.unary("Log", "y", x[0])?]),
    );
    check(
        "Pow exponent",
        vec![
            input("a", rng.tensor(&[2, 3], 0.5, 1.5)),
            input("e", rng.tensor(&[3], 1.0, 0.0)),
        ],
        1e-2,
        |b, x| Ok(vec![b.binary("Pow", "y", x[0], x[1])?]),
    );
    check(
        "ConcatV2",
        vec![
            input("a", rng.tensor(&[2, 1, 3], 1.0, 0.0)),
            input("b", rng.tensor(&[2, 2, 3], 1.0, 0.0)),
            input("c", rng.tensor(&[2, 3, 3], 1.0, 0.0)),
        ],
        1e-2,
        |b, x| Ok(vec![b.concat("y", x, 1)?]),
    );
    check(
        "Pad",
        vec![input("x", rng.tensor(&[2, 3, 2], 1.0, 0.0))],
        1e-2,
        |b, x| {
            let p = Tensor::from_vec(&[3, 2], vec![0i32, 1, 2, 0, 1, 1]).unwrap();
            let p = b.constant("paddings", p)?;
            Ok(vec![b.add("Pad", "y", &[x[0], p], Attrs::new())?.into()])
        },
    );
    check("ExpandDims", vec![input("x", x.clone())], 1e-2, |b, x| {
        let d = b.constant("dim", Tensor::scalar(1i32))?;
        Ok(vec![
            b.add("ExpandDims", "y", &[x[0], d], Attrs::new())?.into(),
        ])
    });
    check(
        "BroadcastTo",
        vec![input("x", rng.tensor(&[3, 1], 1.0, 0.0))],
        1e-2,
        |b, x| {
            let s = b.constant("shape", Tensor::from_vec(&[3], vec![2i32, 3, 4]).unwrap())?;
            Ok(vec![
                b.add("BroadcastTo", "y", &[x[0], s], Attrs::new())?.into(),
            ])
        },
    );
    check(
        "Cast f32->f32",
        vec![input("x", x.clone())],
        1e-2,
        |b, x| {
            let a = attrs([("DstT", DType::F32.into())]);
            Ok(vec![b.add("Cast", "y", &[x[0]], a)?.into()])
        },
    );
    for op in ["Select", "SelectV2"] {
        let cond = Tensor::from_vec(&[2, 3], vec![true, false, true, true, false, false]).unwrap();
        check(
            op,
            vec![
                fixed("c", cond),
                input("t", rng.tensor(&[2, 3], 1.0, 0.0)),
                input("e", rng.tensor(&[2, 3], 1.0, 0.0)),
            ],
            1e-2,
            |b, x| {
                Ok(vec![
                    b.add(op, "y", &[x[0], x[1], x[2]], Attrs::new())?.into(),
                ])
            },
        );
    }
    check(
        "SelectV2 broadcast",
        vec![
            fixed(
                "c",
                Tensor::from_vec(&[3], vec![true, false, true]).unwrap(),
            ),
            input("t", rng.tensor(&[2, 3], 1.0, 0.0)),
            input("e", rng.tensor(&[1], 1.0, 0.0)),
        ],
        1e-2,
        |b, x| {
            Ok(vec![
                b.add("SelectV2", "y", &[x[0], x[1], x[2]], Attrs::new())?
                    .into(),
            ])
        },
    );
}

#[test]
fn dense_labels_of_the_softmax_cross_entropy() {
    let mut rng = Rng(14);
    check(
        "SoftmaxCrossEntropyWithLogits labels",
        vec![
            input("logits", rng.tensor(&[3, 4], 2.0, 0.0)),
            input("labels", rng.tensor(&[3, 4], 0.5, 0.5)),
        ],
        1e-2,
        |b, x| {
            let id = b.add(
                "SoftmaxCrossEntropyWithLogits",
                "xent",
                &[x[0], x[1]],
                Attrs::new(),
            )?;
            Ok(vec![id.into()])
        },
    );
}

/// With an unknown batch dimension the rules use `Shape`, `Size` and
/// `BroadcastTo` at run time.
#[test]
fn unknown_batch_dimension() {
    let mut rng = Rng(15);
    let labels = Tensor::from_vec(&[3], vec![1i32, 0, 2]).unwrap();
    check_with(
        "dynamic network",
        vec![
            input("x", rng.tensor(&[3, 4, 4, 2], 1.0, 0.0)),
            fixed("w", rng.tensor(&[3, 3, 2, 3], 0.5, 0.0)),
            fixed("labels", labels),
        ],
        1e-2,
        true,
        |b, x| {
            let e1 = b.constant("empty_mean", Tensor::zeros(DType::F32, &[0]).unwrap())?;
            let e2 = b.constant("empty_var", Tensor::zeros(DType::F32, &[0]).unwrap())?;
            let gamma = b.constant(
                "gamma",
                Tensor::from_vec(&[3], vec![1.0f32, 0.5, 2.0]).unwrap(),
            )?;
            let beta = b.constant(
                "beta",
                Tensor::from_vec(&[3], vec![0.1f32, 0.0, -0.2]).unwrap(),
            )?;
            let c = b.conv2d("conv", x[0], x[1], [1, 1], Padding::Same)?;
            let bn = b.fused_batch_norm("bn", c, gamma, beta, e1, e2, 0.001, true)?;
            let p = b.pool("AvgPool", "pool", bn.into(), 2, 2, Padding::Valid)?;
            let m = b.mean("mean", p, &[1, 2], false)?;
            let xent = b.add(
                "SparseSoftmaxCrossEntropyWithLogits",
                "xent",
                &[m, x[2]],
                Attrs::new(),
            )?;
            let loss = b.mean("loss", xent.into(), &[0], false)?;
            // The batch statistics too (§2.6), and the loss seeded by itself.
            let sv = b.mean("stat", OutletId::new(bn, 2), &[0], false)?;
            Ok(vec![loss, OutletId::new(bn, 1), sv])
        },
    );
}

/// The QAT training graph of the built-in MNIST CNN: every trainable
/// parameter gets a gradient through the fake quants, the quantizer ranges
/// and batch-norm statistics are not trainable (unless ranges are
/// learnable), and one backward pass runs.
#[test]
fn the_training_graph_of_the_mnist_cnn_differentiates() {
    use quant_core::models::{self, ModelOptions};
    let mut graph = models::mnist_cnn(ModelOptions {
        seed: 3,
        training: true,
    })
    .unwrap();
    quant_passes::create_training_graph(&mut graph, 0).unwrap();
    let mut b = GraphBuilder::extend(graph, quant_core::OpRegistry::builtin());
    let labels = b
        .placeholder("labels", DType::I32, Shape(vec![None]))
        .unwrap();
    let logits = b.graph().outlet(models::LOGITS).unwrap();
    let xent = b
        .add(
            "SparseSoftmaxCrossEntropyWithLogits",
            "xent",
            &[logits, labels],
            Attrs::new(),
        )
        .unwrap();
    let loss = b.mean("loss", xent.into(), &[0], false).unwrap();
    let mut graph = b.finish();

    let off = GradientOptions::default();
    let vars = trainable_variables(&graph, loss, &off);
    let names: Vec<String> = vars
        .iter()
        .map(|&id| graph.node(id).name().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "conv1/weights",
            "conv1/BatchNorm/gamma",
            "conv1/BatchNorm/beta",
            "conv2/weights",
            "conv2/BatchNorm/gamma",
            "conv2/BatchNorm/beta",
            "logits/weights",
            "logits/biases"
        ]
    );
    let learnable = GradientOptions {
        learnable_ranges: true,
        ..GradientOptions::default()
    };
    let ranges: Vec<String> = trainable_variables(&graph, loss, &learnable)
        .iter()
        .map(|&id| graph.node(id).name().to_string())
        .filter(|n| !names.contains(n))
        .collect();
    assert!(!ranges.is_empty());
    assert!(
        ranges
            .iter()
            .all(|n| n.ends_with("_quant/min") || n.ends_with("_quant/max")),
        "{ranges:?}"
    );

    let xs: Vec<OutletId> = vars.iter().map(|&id| id.into()).collect();
    let grads = gradients(&mut graph, &[loss], &xs, &off).unwrap();
    let fetch: Vec<String> = grads
        .iter()
        .map(|g| graph.outlet_name(g.expect("every parameter has a gradient")))
        .collect();
    let mut session = Session::new(graph).unwrap();
    let mut rng = Rng(16);
    let x = rng.tensor(&[2, 28, 28, 1], 0.5, 0.5);
    let y = Tensor::from_vec(&[2], vec![3i32, 7]).unwrap();
    let f: Vec<&str> = fetch.iter().map(String::as_str).collect();
    let got = session.run(&[("input", x), ("labels", y)], &f).unwrap();
    for (name, g) in names.iter().zip(&got) {
        let v = g.to_f64_vec();
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
        assert!(v.iter().any(|&x| x != 0.0), "{name}: all zero");
    }
}
