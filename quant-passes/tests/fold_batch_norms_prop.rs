//! Semantic property of `FoldBatchNorms` (eval form): on random small
//! layer + batch-norm graphs (Conv2D, depthwise with any multiplier, and
//! Reshape-wrapped MatMul; random strides, padding, dilations and BN
//! parameters), the folded graph computes what the original does.

use ndarray::ArrayD;
use proptest::prelude::*;
use quant_core::builder::{GraphBuilder, Padding};
use quant_core::models::Rng;
use quant_core::{AttrValue, DType, Graph, OutletId, Shape, Tensor};
use quant_kernels::session::Session;
use quant_passes::passes::fold_batch_norms::FOLD_FUSED;
use quant_passes::{FoldBatchNorms, PassManager, QuantizeConfig};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Conv,
    Depthwise,
    MatMul,
}

#[derive(Clone, Copy, Debug)]
struct Case {
    kind: Kind,
    batch: usize,
    size: usize,
    in_c: usize,
    out: usize,
    kernel: usize,
    stride: usize,
    dilation: usize,
    same: bool,
    identity: bool,
    seed: u64,
}

fn tensor(rng: &mut Rng, shape: &[usize], f: impl Fn(&mut Rng) -> f32) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(shape, (0..n).map(|_| f(rng)).collect::<Vec<f32>>()).unwrap()
}

/// The graph of `case` (output `layer/Relu6`) and a random input.
fn build(case: &Case) -> (Graph, Tensor) {
    let mut rng = Rng::new(case.seed);
    let mut b = GraphBuilder::new();
    let (x, input) = match case.kind {
        Kind::MatMul => {
            let shape = [case.batch, case.in_c];
            let x = b
                .placeholder("input", DType::F32, Shape::known(&shape))
                .unwrap();
            (x, tensor(&mut rng, &shape, Rng::normal))
        }
        Kind::Conv | Kind::Depthwise => {
            let shape = [case.batch, case.size, case.size, case.in_c];
            let x = b
                .placeholder("input", DType::F32, Shape::known(&shape))
                .unwrap();
            (x, tensor(&mut rng, &shape, Rng::normal))
        }
    };
    let padding = if case.same {
        Padding::Same
    } else {
        Padding::Valid
    };
    b.scope("layer", |b| {
        let (y, channels) = match case.kind {
            Kind::Conv => {
                let k = case.kernel;
                let w = b.constant(
                    "weights",
                    tensor(&mut rng, &[k, k, case.in_c, case.out], Rng::normal),
                )?;
                let y = b.conv2d("Conv2D", x, w, [case.stride; 2], padding)?;
                (y, case.out)
            }
            Kind::Depthwise => {
                let k = case.kernel;
                let w = b.constant(
                    "depthwise_weights",
                    tensor(&mut rng, &[k, k, case.in_c, case.out], Rng::normal),
                )?;
                let y = b.depthwise_conv2d("depthwise", x, w, [case.stride; 2], padding)?;
                (y, case.in_c * case.out)
            }
            Kind::MatMul => {
                let w = b.constant(
                    "weights",
                    tensor(&mut rng, &[case.in_c, case.out], Rng::normal),
                )?;
                let y = b.matmul("MatMul", x, w, false, false)?;
                (y, case.out)
            }
        };
        let y = if case.identity {
            b.identity("layer_out", y)?
        } else {
            y
        };
        let y = match case.kind {
            Kind::MatMul => {
                let c = i32::try_from(channels).unwrap();
                b.reshape("Reshape", y, &[-1, 1, 1, c])?
            }
            _ => y,
        };
        let n = [channels];
        let gamma = b.constant(
            "BatchNorm/gamma",
            tensor(&mut rng, &n, |r| 0.25 + 1.5 * r.uniform()),
        )?;
        let beta = b.constant("BatchNorm/beta", tensor(&mut rng, &n, |r| 0.5 * r.normal()))?;
        let mean = b.constant(
            "BatchNorm/moving_mean",
            tensor(&mut rng, &n, |r| 0.5 * r.normal()),
        )?;
        let var = b.constant(
            "BatchNorm/moving_variance",
            tensor(&mut rng, &n, |r| 0.05 + 3.0 * r.uniform()),
        )?;
        let bn = b.fused_batch_norm(
            "BatchNorm/FusedBatchNormV3",
            y,
            gamma,
            beta,
            mean,
            var,
            0.001,
            false,
        )?;
        let y: OutletId = bn.into();
        let y = match case.kind {
            Kind::MatMul => {
                let c = i32::try_from(channels).unwrap();
                b.reshape("Reshape_1", y, &[-1, c])?
            }
            _ => y,
        };
        b.relu6("Relu6", y)
    })
    .unwrap();
    let mut g = b.finish();
    // The builder has no dilation parameter: set it, then re-infer shapes.
    if case.dilation > 1 && !matches!(case.kind, Kind::MatMul) {
        let name = match case.kind {
            Kind::Depthwise => "layer/depthwise",
            _ => "layer/Conv2D",
        };
        let id = g.id(name).unwrap();
        let d = case.dilation as i64;
        g.set_attr(id, "dilations", AttrValue::Ints(vec![1, d, d, 1]));
        g.infer_facts(quant_core::OpRegistry::builtin()).unwrap();
    }
    (g, input)
}

fn run(graph: Graph, input: &Tensor) -> ArrayD<f32> {
    let mut s = Session::new(graph).unwrap();
    let out = s
        .run(&[("input", input.clone())], &["layer/Relu6"])
        .unwrap();
    out[0].array::<f32>().unwrap().clone()
}

/// The largest absolute difference, relative to the largest output
/// magnitude but at least 1: outputs near zero come from cancelling terms of
/// magnitude ~1 (`m·layer(x)` against the bias), so their error is absolute.
fn max_rel_error(got: &ArrayD<f32>, want: &ArrayD<f32>) -> f64 {
    assert_eq!(got.shape(), want.shape());
    let scale = want
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(1.0);
    got.iter().zip(want).fold(0f64, |m, (&a, &b)| {
        m.max((f64::from(a) - f64::from(b)).abs())
    }) / scale
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Conv), Just(Kind::Depthwise), Just(Kind::MatMul)]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn folding_preserves_the_output(
        kind in kind(), batch in 1usize..3, size in 1usize..7, in_c in 1usize..5,
        out in 1usize..4, kernel in 1usize..4, stride in 1usize..3, dilation in 1usize..3,
        same in any::<bool>(), identity in any::<bool>(), seed in any::<u64>(),
    ) {
        // VALID needs the (dilated) kernel to fit.
        let size = if same { size } else { size + (kernel - 1) * dilation };
        let case = Case { kind, batch, size, in_c, out, kernel, stride, dilation, same, identity, seed };
        let (g, input) = build(&case);
        let mut folded = g.clone();
        let report = PassManager::new()
            .with(FoldBatchNorms)
            .run(&mut folded, &QuantizeConfig::eval())
            .unwrap();
        prop_assert_eq!(report.count(FOLD_FUSED), 1, "{:?}", report.skipped);
        let want = run(g, &input);
        let got = run(folded, &input);
        let err = max_rel_error(&got, &want);
        prop_assert!(err <= 1e-5, "{:?}: relative error {:e}", case, err);
    }
}
