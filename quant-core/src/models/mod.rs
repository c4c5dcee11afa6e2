//! Built-in example models, built with [`GraphBuilder`].
//!
//! - [`mnist_cnn`]: a small MNIST classifier, two conv-BN-ReLU6 layers with
//!   max pooling and a dense layer.
//! - [`resnet_block`]: a small residual model exercising every layer shape
//!   the quantize pass knows: a bypass add before the activation, a
//!   depthwise-separable layer, a post-activation bypass, and a final dense
//!   layer without activation.
//!
//! Parameters are `Variable`s initialised from a seeded generator (He
//! normal for weights; batch-norm scale 1, offset 0, moving mean 0, moving
//! variance 1), so the same seed always gives the same graph.

mod init;

pub use init::Rng;

use crate::builder::{GraphBuilder, Padding};
use crate::dtype::DType;
use crate::error::GraphError;
use crate::graph::{Graph, OutletId};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// The momentum of the batch norms' moving averages in training graphs:
/// each run moves them `1 − momentum` of the way to the batch statistics.
pub const BN_MOMENTUM: f32 = 0.99;

/// Options shared by the built-in models.
#[derive(Clone, Copy, Debug, Default)]
pub struct ModelOptions {
    /// Seed of the parameter initialiser.
    pub seed: u64,
    /// Whether batch norms compute batch statistics (`is_training`). Training
    /// graphs also update the moving statistics, as TensorFlow's layers do:
    /// `BatchNorm/AssignMovingAvg` = `AssignSub(moving_mean, (moving_mean −
    /// batch_mean)·decay)` with `BatchNorm/AssignMovingAvg/decay` = 1 −
    /// [`BN_MOMENTUM`], and `AssignMovingAvg_1` likewise for the variance
    /// (output 2, Bessel-corrected). The updates have no consumers: fetch
    /// them to run them.
    pub training: bool,
}

/// The names of the built-in models, as accepted by [`builtin`].
pub const BUILTIN_MODELS: [&str; 2] = ["mnist-cnn", "resnet-block"];

/// Builds the built-in model called `name`.
pub fn builtin(name: &str, options: ModelOptions) -> Option<Result<Graph, GraphError>> {
    match name {
        "mnist-cnn" => Some(mnist_cnn(options)),
        "resnet-block" => Some(resnet_block(options)),
        _ => None,
    }
}

/// The name of the input placeholder of the built-in models (`[N, 28, 28, 1]` f32).
pub const INPUT: &str = "input";
/// The name of the logits node of the built-in models (`[N, 10]` f32).
pub const LOGITS: &str = "logits/BiasAdd";

struct Layers<'a, 'r> {
    b: &'a mut GraphBuilder<'r>,
    rng: Rng,
    training: bool,
}

impl Layers<'_, '_> {
    fn weights(
        &mut self,
        name: &str,
        shape: &[usize],
        fan_in: usize,
    ) -> Result<OutletId, GraphError> {
        let std = (2.0 / fan_in as f32).sqrt();
        let values = (0..shape.iter().product())
            .map(|_| self.rng.normal() * std)
            .collect();
        let t = Tensor::from_vec(shape, values).map_err(|source| GraphError::Tensor {
            node: name.into(),
            source,
        })?;
        self.b.variable(name, t, true)
    }

    fn filled(
        &mut self,
        name: &str,
        channels: usize,
        value: f32,
        trainable: bool,
    ) -> Result<OutletId, GraphError> {
        let t = Tensor::from_vec(&[channels], vec![value; channels]).map_err(|source| {
            GraphError::Tensor {
                node: name.into(),
                source,
            }
        })?;
        self.b.variable(name, t, trainable)
    }

    /// `BatchNorm/FusedBatchNormV3` over `x` with its four parameter variables.
    fn batch_norm(&mut self, x: OutletId, channels: usize) -> Result<OutletId, GraphError> {
        let training = self.training;
        let scope = "BatchNorm";
        let gamma = self.filled(&format!("{scope}/gamma"), channels, 1.0, true)?;
        let beta = self.filled(&format!("{scope}/beta"), channels, 0.0, true)?;
        let mean = self.filled(&format!("{scope}/moving_mean"), channels, 0.0, false)?;
        let var = self.filled(&format!("{scope}/moving_variance"), channels, 1.0, false)?;
        let bn = self.b.fused_batch_norm(
            &format!("{scope}/FusedBatchNormV3"),
            x,
            gamma,
            beta,
            mean,
            var,
            0.001,
            training,
        )?;
        if training {
            let decay = self.b.constant(
                &format!("{scope}/AssignMovingAvg/decay"),
                Tensor::scalar(1.0 - BN_MOMENTUM),
            )?;
            for (k, moving, update) in [(1, mean, "AssignMovingAvg"), (2, var, "AssignMovingAvg_1")]
            {
                let stat = OutletId::new(bn, k);
                let n = |name: &str| format!("{scope}/{update}/{name}");
                let diff = self.b.binary("Sub", &n("sub"), moving, stat)?;
                let delta = self.b.binary("Mul", &n("mul"), diff, decay)?;
                self.b.add(
                    "AssignSub",
                    &format!("{scope}/{update}"),
                    &[moving, delta],
                    crate::Attrs::new(),
                )?;
            }
        }
        Ok(bn.into())
    }

    /// `scope/{weights, Conv2D|depthwise, BatchNorm/..., Relu6?}`.
    fn conv_bn(
        &mut self,
        scope: &str,
        x: OutletId,
        kernel: usize,
        out: usize,
        depthwise: bool,
        relu6: bool,
    ) -> Result<OutletId, GraphError> {
        let in_c = self
            .b
            .graph()
            .fact(x)
            .shape
            .as_ref()
            .and_then(|s| s.dim(3))
            .unwrap_or(1);
        self.b.scope(scope, |b| {
            let mut l = Layers {
                b,
                rng: self.rng.fork(),
                training: self.training,
            };
            let y = if depthwise {
                let w = l.weights(
                    "depthwise_weights",
                    &[kernel, kernel, in_c, 1],
                    kernel * kernel,
                )?;
                l.b.depthwise_conv2d("depthwise", x, w, [1, 1], Padding::Same)?
            } else {
                let w = l.weights(
                    "weights",
                    &[kernel, kernel, in_c, out],
                    kernel * kernel * in_c,
                )?;
                l.b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)?
            };
            let channels = if depthwise { in_c } else { out };
            let y = l.batch_norm(y, channels)?;
            if relu6 { l.b.relu6("Relu6", y) } else { Ok(y) }
        })
    }

    /// `logits/{weights, biases, MatMul, BiasAdd}`: a dense layer without activation.
    fn dense(
        &mut self,
        x: OutletId,
        inputs: usize,
        outputs: usize,
    ) -> Result<OutletId, GraphError> {
        self.b.scope("logits", |b| {
            let mut l = Layers {
                b,
                rng: self.rng.fork(),
                training: self.training,
            };
            let w = l.weights("weights", &[inputs, outputs], inputs)?;
            let bias = l.filled("biases", outputs, 0.0, true)?;
            let y = l.b.matmul("MatMul", x, w, false, false)?;
            l.b.bias_add("BiasAdd", y, bias)
        })
    }
}

fn input(b: &mut GraphBuilder<'_>) -> Result<OutletId, GraphError> {
    b.placeholder(
        INPUT,
        DType::F32,
        Shape(vec![None, Some(28), Some(28), Some(1)]),
    )
}

/// The MNIST CNN: `input [N,28,28,1]` → conv1 5×5×16 + BN + ReLU6 → max pool 2 →
/// conv2 5×5×32 + BN + ReLU6 → max pool 2 → reshape `[N, 1568]` → dense 10
/// (`logits/BiasAdd`).
pub fn mnist_cnn(options: ModelOptions) -> Result<Graph, GraphError> {
    let mut b = GraphBuilder::new();
    let mut l = Layers {
        b: &mut b,
        rng: Rng::new(options.seed),
        training: options.training,
    };
    let x = input(l.b)?;
    let x = l.conv_bn("conv1", x, 5, 16, false, true)?;
    let x =
        l.b.pool("MaxPool", "pool1/MaxPool", x, 2, 2, Padding::Valid)?;
    let x = l.conv_bn("conv2", x, 5, 32, false, true)?;
    let x =
        l.b.pool("MaxPool", "pool2/MaxPool", x, 2, 2, Padding::Valid)?;
    let x = l.b.reshape("flatten/Reshape", x, &[-1, 7 * 7 * 32])?;
    l.dense(x, 7 * 7 * 32, 10)?;
    Ok(b.finish())
}

/// The residual example: stem conv 3×3×8 + BN + ReLU6 → max pool 2 →
/// block1 (conv-BN-ReLU6, conv-BN, `block1/add` with the block input, ReLU6)
/// → separable (depthwise 3×3 + BN + ReLU6, pointwise 1×1×16 + BN + ReLU6) →
/// block2 (conv 1×1×16 + BN + ReLU6, then `block2/add` of that activation
/// and the block input: a post-activation bypass) → mean over H, W →
/// dense 10 (`logits/BiasAdd`).
pub fn resnet_block(options: ModelOptions) -> Result<Graph, GraphError> {
    let mut b = GraphBuilder::new();
    let mut l = Layers {
        b: &mut b,
        rng: Rng::new(options.seed),
        training: options.training,
    };
    let x = input(l.b)?;
    let x = l.conv_bn("stem", x, 3, 8, false, true)?;
    let x =
        l.b.pool("MaxPool", "stem/MaxPool", x, 2, 2, Padding::Valid)?;
    let block_in = x;
    let y = l.b.scope("block1", |b| {
        let mut l = Layers {
            b,
            rng: l.rng.fork(),
            training: options.training,
        };
        let y = l.conv_bn("conv_a", block_in, 3, 8, false, true)?;
        let y = l.conv_bn("conv_b", y, 3, 8, false, false)?;
        let y = l.b.binary("AddV2", "add", y, block_in)?;
        l.b.relu6("Relu6", y)
    })?;
    let y = l.conv_bn("separable/depthwise", y, 3, 8, true, true)?;
    let y = l.conv_bn("separable/pointwise", y, 1, 16, false, true)?;
    let block_in = y;
    let y = l.b.scope("block2", |b| {
        let mut l = Layers {
            b,
            rng: l.rng.fork(),
            training: options.training,
        };
        let y = l.conv_bn("conv", block_in, 1, 16, false, true)?;
        l.b.binary("AddV2", "add", block_in, y)
    })?;
    let y = l.b.mean("pool/Mean", y, &[1, 2], false)?;
    l.dense(y, 16, 10)?;
    Ok(b.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_validate_and_have_the_documented_outputs() {
        for name in BUILTIN_MODELS {
            let g = builtin(name, ModelOptions::default()).unwrap().unwrap();
            g.validate(crate::OpRegistry::builtin()).unwrap();
            let logits = g.by_name(LOGITS).unwrap();
            assert_eq!(
                logits.outputs()[0].shape,
                Some(Shape(vec![None, Some(10)])),
                "{name}"
            );
            assert!(g.by_name(INPUT).is_some());
        }
    }

    #[test]
    fn same_seed_same_graph_other_seed_other_weights() {
        let a = mnist_cnn(ModelOptions::default()).unwrap();
        let b = mnist_cnn(ModelOptions::default()).unwrap();
        let c = mnist_cnn(ModelOptions {
            seed: 1,
            ..ModelOptions::default()
        })
        .unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
