//! Building graphs in Rust.
//!
//! [`GraphBuilder`] adds nodes with TensorFlow op types and attributes,
//! infers each node's output facts as it goes (so shape errors surface at
//! the line that caused them, naming the node), and prefixes names with the
//! current name scope (`conv1/Conv2D`), making them unique with TensorFlow's
//! `_1`, `_2` suffixes.
//!
//! ```
//! use quant_core::builder::{GraphBuilder, Padding};
//! use quant_core::{DType, Shape, Tensor};
//! let mut b = GraphBuilder::new();
//! let x = b.placeholder("input", DType::F32, Shape(vec![None, Some(8), Some(8), Some(3)])).unwrap();
//! let w = b.constant("w", Tensor::from_vec(&[3, 3, 3, 4], vec![0.1f32; 108]).unwrap()).unwrap();
//! let y = b.scope("conv1", |b| b.conv2d("Conv2D", x, w, [1, 1], Padding::Same)).unwrap();
//! let g = b.finish();
//! assert_eq!(g.node(y.node).name(), "conv1/Conv2D");
//! assert_eq!(g.fact(y).shape, Some(Shape(vec![None, Some(8), Some(8), Some(4)])));
//! ```

use crate::attr::{AttrValue, Attrs, attrs};
use crate::dtype::DType;
use crate::error::GraphError;
use crate::graph::{Graph, NewNode, NodeId, OutletId, OutputFact};
use crate::ops::{OpRegistry, check_inputs_and_attrs, infer_with};
use crate::shape::Shape;
use crate::tensor::Tensor;

/// Convolution and pooling padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Padding {
    /// Output size `ceil(input / stride)`, zero-padded.
    Same,
    /// No padding.
    Valid,
}

impl Padding {
    fn attr(self) -> AttrValue {
        AttrValue::Str(match self {
            Padding::Same => "SAME".into(),
            Padding::Valid => "VALID".into(),
        })
    }
}

/// Builds a [`Graph`] node by node; see the module docs.
pub struct GraphBuilder<'r> {
    graph: Graph,
    registry: &'r OpRegistry,
    scopes: Vec<String>,
}

impl Default for GraphBuilder<'static> {
    fn default() -> Self {
        GraphBuilder::new()
    }
}

impl GraphBuilder<'static> {
    /// A builder for quant's built-in ops.
    pub fn new() -> GraphBuilder<'static> {
        GraphBuilder::with_registry(OpRegistry::builtin())
    }
}

impl<'r> GraphBuilder<'r> {
    /// A builder inferring facts with `registry` (for graphs using plugin ops).
    pub fn with_registry(registry: &'r OpRegistry) -> GraphBuilder<'r> {
        GraphBuilder {
            graph: Graph::new(),
            registry,
            scopes: Vec::new(),
        }
    }

    /// Continues building on an existing graph.
    pub fn extend(graph: Graph, registry: &'r OpRegistry) -> GraphBuilder<'r> {
        GraphBuilder {
            graph,
            registry,
            scopes: Vec::new(),
        }
    }

    /// The graph built so far.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// Finishes building.
    pub fn finish(self) -> Graph {
        self.graph
    }

    /// Runs `f` with `name` pushed as a name scope.
    pub fn scope<R>(&mut self, name: &str, f: impl FnOnce(&mut Self) -> R) -> R {
        self.scopes.push(name.to_string());
        let result = f(self);
        self.scopes.pop();
        result
    }

    /// The scoped, unique form of `name`.
    pub fn scoped_name(&mut self, name: &str) -> String {
        let len = self.scopes.iter().map(|s| s.len() + 1).sum::<usize>() + name.len();
        let mut full = String::with_capacity(len);
        for scope in &self.scopes {
            full.push_str(scope);
            full.push('/');
        }
        full.push_str(name);
        self.graph.unique_name_owned(full)
    }

    /// The first free scope among `base`, `base_1`, ... (see [`Graph::unique_scope`]).
    pub fn unique_scope(&mut self, base: &str) -> String {
        self.graph.unique_scope(base)
    }

    /// Adds a node of any op type, inferring its output facts. Returns its id.
    pub fn add(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[OutletId],
        attrs: Attrs,
    ) -> Result<NodeId, GraphError> {
        let spec = self.registry.get(op);
        let mut new = NewNode::new(self.scoped_name(name), op).inputs(inputs.iter().copied());
        new.attrs = attrs;
        self.graph.add_node_with(new, |graph, node| match spec {
            Some(spec) => {
                check_inputs_and_attrs(node, spec)?;
                infer_with(graph, node, spec)
            }
            // An unknown op gets one output of unknown dtype and shape.
            None => Ok(vec![OutputFact::default()]),
        })
    }

    fn op1(
        &mut self,
        op: &str,
        name: &str,
        inputs: &[OutletId],
        attrs: Attrs,
    ) -> Result<OutletId, GraphError> {
        self.add(op, name, inputs, attrs).map(OutletId::from)
    }

    /// A graph input.
    pub fn placeholder(
        &mut self,
        name: &str,
        dtype: DType,
        shape: Shape,
    ) -> Result<OutletId, GraphError> {
        let attrs = attrs([
            ("dtype", dtype.into()),
            ("shape", AttrValue::Shape(Some(shape))),
        ]);
        self.op1("Placeholder", name, &[], attrs)
    }

    /// A constant.
    pub fn constant(&mut self, name: &str, value: Tensor) -> Result<OutletId, GraphError> {
        let attrs = attrs([("dtype", value.dtype().into()), ("value", value.into())]);
        self.op1("Const", name, &[], attrs)
    }

    /// A variable with its initial value; `trainable` marks parameters the optimizer updates.
    pub fn variable(
        &mut self,
        name: &str,
        initial: Tensor,
        trainable: bool,
    ) -> Result<OutletId, GraphError> {
        let attrs = attrs([
            ("dtype", initial.dtype().into()),
            (
                "shape",
                AttrValue::Shape(Some(Shape::known(initial.shape()))),
            ),
            ("initial_value", initial.into()),
            ("trainable", trainable.into()),
        ]);
        self.op1("Variable", name, &[], attrs)
    }

    /// `Identity`.
    pub fn identity(&mut self, name: &str, x: OutletId) -> Result<OutletId, GraphError> {
        self.op1("Identity", name, &[x], Attrs::new())
    }

    fn conv_attrs(strides: [usize; 2], padding: Padding) -> Attrs {
        attrs([
            (
                "strides",
                AttrValue::Ints(vec![1, strides[0] as i64, strides[1] as i64, 1]),
            ),
            ("padding", padding.attr()),
            ("data_format", "NHWC".into()),
            ("dilations", AttrValue::Ints(vec![1, 1, 1, 1])),
        ])
    }

    /// `Conv2D` (NHWC input, HWIO filter).
    pub fn conv2d(
        &mut self,
        name: &str,
        x: OutletId,
        filter: OutletId,
        strides: [usize; 2],
        padding: Padding,
    ) -> Result<OutletId, GraphError> {
        self.op1(
            "Conv2D",
            name,
            &[x, filter],
            Self::conv_attrs(strides, padding),
        )
    }

    /// `DepthwiseConv2dNative` (filter `[h, w, in, multiplier]`).
    pub fn depthwise_conv2d(
        &mut self,
        name: &str,
        x: OutletId,
        filter: OutletId,
        strides: [usize; 2],
        padding: Padding,
    ) -> Result<OutletId, GraphError> {
        self.op1(
            "DepthwiseConv2dNative",
            name,
            &[x, filter],
            Self::conv_attrs(strides, padding),
        )
    }

    /// `MatMul`.
    pub fn matmul(
        &mut self,
        name: &str,
        a: OutletId,
        b: OutletId,
        transpose_a: bool,
        transpose_b: bool,
    ) -> Result<OutletId, GraphError> {
        self.op1(
            "MatMul",
            name,
            &[a, b],
            attrs([
                ("transpose_a", transpose_a.into()),
                ("transpose_b", transpose_b.into()),
            ]),
        )
    }

    /// `BiasAdd` (NHWC).
    pub fn bias_add(
        &mut self,
        name: &str,
        x: OutletId,
        bias: OutletId,
    ) -> Result<OutletId, GraphError> {
        self.op1(
            "BiasAdd",
            name,
            &[x, bias],
            attrs([("data_format", "NHWC".into())]),
        )
    }

    /// A broadcasting binary op: `Add`, `AddV2`, `Sub` or `Mul`.
    pub fn binary(
        &mut self,
        op: &str,
        name: &str,
        a: OutletId,
        b: OutletId,
    ) -> Result<OutletId, GraphError> {
        self.op1(op, name, &[a, b], Attrs::new())
    }

    /// A unary op with no attributes: `Relu`, `Relu6`, `Rsqrt`, `Softmax`, ...
    pub fn unary(&mut self, op: &str, name: &str, x: OutletId) -> Result<OutletId, GraphError> {
        self.op1(op, name, &[x], Attrs::new())
    }

    /// `Relu6`.
    pub fn relu6(&mut self, name: &str, x: OutletId) -> Result<OutletId, GraphError> {
        self.unary("Relu6", name, x)
    }

    /// `MaxPool` or `AvgPool` with a square window.
    pub fn pool(
        &mut self,
        op: &str,
        name: &str,
        x: OutletId,
        size: usize,
        stride: usize,
        padding: Padding,
    ) -> Result<OutletId, GraphError> {
        let (k, s) = (size as i64, stride as i64);
        let a = attrs([
            ("ksize", AttrValue::Ints(vec![1, k, k, 1])),
            ("strides", AttrValue::Ints(vec![1, s, s, 1])),
            ("padding", padding.attr()),
            ("data_format", "NHWC".into()),
        ]);
        self.op1(op, name, &[x], a)
    }

    /// `Reshape` to a constant shape (`-1` for one inferred dimension).
    pub fn reshape(
        &mut self,
        name: &str,
        x: OutletId,
        shape: &[i32],
    ) -> Result<OutletId, GraphError> {
        let shape_t = Tensor::from_vec(&[shape.len()], shape.to_vec()).map_err(|source| {
            GraphError::Tensor {
                node: name.into(),
                source,
            }
        })?;
        let s = self.constant(&format!("{name}/shape"), shape_t)?;
        self.op1("Reshape", name, &[x, s], Attrs::new())
    }

    /// `Mean` over constant axes.
    pub fn mean(
        &mut self,
        name: &str,
        x: OutletId,
        axes: &[i32],
        keep_dims: bool,
    ) -> Result<OutletId, GraphError> {
        let axes_t = Tensor::from_vec(&[axes.len()], axes.to_vec()).map_err(|source| {
            GraphError::Tensor {
                node: name.into(),
                source,
            }
        })?;
        let a = self.constant(&format!("{name}/reduction_indices"), axes_t)?;
        self.op1(
            "Mean",
            name,
            &[x, a],
            attrs([("keep_dims", keep_dims.into())]),
        )
    }

    /// `ConcatV2` along a constant axis.
    pub fn concat(
        &mut self,
        name: &str,
        inputs: &[OutletId],
        axis: i32,
    ) -> Result<OutletId, GraphError> {
        let a = self.constant(&format!("{name}/axis"), Tensor::scalar(axis))?;
        let mut all = inputs.to_vec();
        all.push(a);
        self.op1(
            "ConcatV2",
            name,
            &all,
            attrs([("N", AttrValue::Int(inputs.len() as i64))]),
        )
    }

    /// `FusedBatchNormV3`; returns the node (output 0 is `y`, 1 and 2 the batch mean and variance).
    #[allow(clippy::too_many_arguments)]
    pub fn fused_batch_norm(
        &mut self,
        name: &str,
        x: OutletId,
        scale: OutletId,
        offset: OutletId,
        mean: OutletId,
        variance: OutletId,
        epsilon: f32,
        is_training: bool,
    ) -> Result<NodeId, GraphError> {
        let a = attrs([
            ("epsilon", epsilon.into()),
            ("is_training", is_training.into()),
            ("data_format", "NHWC".into()),
        ]);
        self.add(
            "FusedBatchNormV3",
            name,
            &[x, scale, offset, mean, variance],
            a,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_errors_name_the_node() {
        let mut b = GraphBuilder::new();
        let x = b
            .placeholder("x", DType::F32, Shape::known(&[1, 8, 8, 3]))
            .unwrap();
        let w = b
            .constant("w", Tensor::zeros(DType::F32, &[3, 3, 4, 8]).unwrap())
            .unwrap();
        let err = b
            .scope("conv", |b| b.conv2d("Conv2D", x, w, [1, 1], Padding::Same))
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("node 'conv/Conv2D' (Conv2D): input [1,8,8,3] has 3 channels"),
            "{err}"
        );
    }

    #[test]
    fn names_are_scoped_and_unique() {
        let mut b = GraphBuilder::new();
        let x = b.placeholder("x", DType::F32, Shape::known(&[2])).unwrap();
        let r1 = b.scope("block", |b| b.unary("Relu", "Relu", x)).unwrap();
        let r2 = b.scope("block", |b| b.unary("Relu", "Relu", x)).unwrap();
        let g = b.finish();
        assert_eq!(g.node(r1.node).name(), "block/Relu");
        assert_eq!(g.node(r2.node).name(), "block/Relu_1");
    }
}
