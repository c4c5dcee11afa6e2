//! What the fused and unfused batch-norm folds share: the kind of layer a
//! batch norm folds into, and how a per-channel factor reaches its filter.

use quant_core::builder::GraphBuilder;
use quant_core::{Graph, GraphError, NodeId, OutletId};

/// The layer a batch norm folds into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Layer {
    /// `Conv2D`: filter `[kh, kw, in, out]`, channels on the last axis.
    Conv2D,
    /// `DepthwiseConv2dNative`: filter `[kh, kw, in, mult]`, output
    /// channel `i·mult + j`.
    Depthwise {
        /// `in` of the filter.
        in_channels: usize,
        /// `mult` of the filter.
        multiplier: usize,
    },
    /// `MatMul`: weights `[in, out]`, channels on the last axis.
    MatMul,
}

impl Layer {
    /// A per-output-channel factor `[C]` shaped to multiply the filter:
    /// unchanged for `Conv2D` and `MatMul` (it broadcasts over the last
    /// axis), reshaped to `[in, mult]` as node `name` for depthwise filters.
    pub(crate) fn per_filter(
        self,
        b: &mut GraphBuilder<'_>,
        factor: OutletId,
        name: &str,
    ) -> Result<OutletId, GraphError> {
        match self {
            Layer::Depthwise {
                in_channels,
                multiplier,
            } => {
                let shape = [in_channels, multiplier].map(|d| {
                    i32::try_from(d).unwrap_or_else(|_| unreachable!("filter dims fit in i32"))
                });
                b.reshape(name, factor, &shape)
            }
            Layer::Conv2D | Layer::MatMul => Ok(factor),
        }
    }
}

/// Whether node `id` works on NCHW data.
pub(crate) fn is_nchw(graph: &Graph, id: NodeId) -> bool {
    graph
        .node(id)
        .attr_str("data_format")
        .is_ok_and(|f| f == "NCHW")
}
