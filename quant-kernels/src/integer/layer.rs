//! The quantization of the weighted layers (CONV_2D, DEPTHWISE_CONV_2D,
//! FULLY_CONNECTED): weight offsets, bias, multiplier precision (§7.3) and
//! the LiteRT 2.3 checks on them.

use quant_core::DType;
use quant_core::integer::{Activation, TensorIndex};

use super::fixed_point::activation_range;
use super::op::{Affine, Ctx, OpResult, fail};
use super::value::QType;

/// Which weighted op a layer is (their rules differ, §7.5, §7.10.2–4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayerKind {
    /// CONV_2D.
    Conv,
    /// DEPTHWISE_CONV_2D.
    Depthwise,
    /// FULLY_CONNECTED.
    FullyConnected,
}

/// The validated quantization of one weighted layer.
pub(crate) struct Layer {
    /// Storage type of input, weights and output.
    pub qtype: QType,
    /// Input parameters.
    pub input: Affine,
    /// Output parameters.
    pub output: Affine,
    /// Fused-activation clamp range.
    pub act: (i32, i32),
    /// `q_w − Z_w` for every weight element, in the weight layout (Z_w
    /// taken as 0 where LiteRT ignores it).
    pub weights: Vec<i16>,
    /// Bias per output channel (zeros without a bias).
    pub bias: Vec<i32>,
    /// The real multiplier per output channel, in the precision LiteRT uses
    /// for this layer (§7.3; FULLY_CONNECTED's R rule: always double).
    pub real_multipliers: Vec<f64>,
}

/// Reads and checks the quantization of a layer with `channels` output
/// channels along weight axis `channel_axis`; `channel_of(i)` is the output
/// channel of weight element `i`.
pub(crate) fn prepare_layer(
    ctx: &Ctx,
    filter_t: TensorIndex,
    bias_t: Option<TensorIndex>,
    channel_axis: usize,
    channel_of: impl Fn(usize) -> usize,
    kind: LayerKind,
    activation: Activation,
) -> OpResult<Layer> {
    let input_t = ctx.input(0)?;
    let output_t = ctx.output()?;
    let qtype = ctx.qtype(input_t)?;
    for t in [filter_t, output_t] {
        if ctx.qtype(t)? != qtype {
            return fail(Some(t), format!("must have the input's type {qtype:?}"));
        }
    }
    let input = ctx.affine(input_t)?;
    let output = ctx.affine(output_t)?;
    let filter_shape = &ctx.tensor(filter_t).shape;
    let Some(&channels) = filter_shape.get(channel_axis) else {
        return fail(
            Some(filter_t),
            format!("shape {filter_shape:?} has no axis {channel_axis}"),
        );
    };
    let (w_scales, w_zps) = ctx.scales(filter_t)?;
    let per_channel = w_scales.len() > 1;
    if per_channel {
        if qtype == QType::U8 {
            return fail(Some(filter_t), "uint8 weights must be quantized per tensor");
        }
        if w_scales.len() != channels {
            return fail(
                Some(filter_t),
                format!(
                    "has {} scales for {channels} output channels",
                    w_scales.len()
                ),
            );
        }
        let axis = ctx.tensor(filter_t).quant.as_ref().and_then(|q| q.axis);
        if axis.is_some_and(|a| a != channel_axis) {
            return fail(
                Some(filter_t),
                format!("per-channel axis must be {channel_axis}, is {axis:?}"),
            );
        }
    }
    let zero_point_used = match (qtype, kind) {
        (QType::U8, _) => true,
        (QType::I8, LayerKind::Conv) => {
            if w_zps.iter().any(|&z| z != 0) {
                return fail(Some(filter_t), "int8 CONV_2D weights need zero point 0");
            }
            false
        }
        (QType::I8, LayerKind::Depthwise) => false,
        (QType::I8, LayerKind::FullyConnected) => !per_channel,
    };
    for &z in w_zps {
        if z < i64::from(qtype.min()) || z > i64::from(qtype.max()) {
            return fail(
                Some(filter_t),
                format!("zero point {z} is outside the {qtype:?} range"),
            );
        }
    }
    let levels = ctx.const_levels(filter_t)?;
    let expected: usize = filter_shape.iter().product();
    if levels.len() != expected || ctx.constant(filter_t)?.shape() != filter_shape.as_slice() {
        return fail(
            Some(filter_t),
            format!("data does not have the declared shape {filter_shape:?}"),
        );
    }
    let broadcast = |v: usize| if per_channel { v } else { 0 };
    let weights = levels
        .iter()
        .enumerate()
        .map(|(i, &q)| {
            let z = if zero_point_used {
                w_zps[broadcast(channel_of(i))] as i32
            } else {
                0
            };
            (q - z) as i16
        })
        .collect();

    // Multiplier precision (§7.3): the double product for int8 conv and
    // depthwise and per-channel int8 FC; the float32 product otherwise. The
    // reference FULLY_CONNECTED always requantizes with the double product.
    let double = match kind {
        LayerKind::FullyConnected => true,
        _ => qtype == QType::I8,
    };
    let float_product = !(qtype == QType::I8 && (kind != LayerKind::FullyConnected || per_channel));
    let real_multipliers: Vec<f64> = (0..channels)
        .map(|c| {
            let s_w = w_scales[broadcast(c)];
            if double {
                f64::from(input.scale) * f64::from(s_w) / f64::from(output.scale)
            } else {
                f64::from(input.scale * s_w) / f64::from(output.scale)
            }
        })
        .collect();

    let bias = match bias_t {
        None => vec![0; channels],
        Some(b) => {
            ctx.expect_dtype(b, DType::I32)?;
            let values = ctx.const_i32(b)?;
            if values.len() != channels {
                return fail(
                    Some(b),
                    format!("has {} values for {channels} output channels", values.len()),
                );
            }
            // LiteRT 2.3's allocation check (§7.2), where it applies.
            if float_product
                && let Some(q) = &ctx.tensor(b).quant
                && let Some(&s_b) = q.scales.first()
            {
                let product = f64::from(input.scale * w_scales[0]);
                let diff = (product - f64::from(s_b)).abs();
                if diff / f64::from(output.scale) > 0.02 {
                    return fail(
                        Some(b),
                        format!(
                            "bias scale {s_b} differs from input·weight scale {product} by more than 2% of the output scale"
                        ),
                    );
                }
            }
            values
        }
    };
    let act = activation_range(activation, qtype, output.scale, output.zero_point);
    Ok(Layer {
        qtype,
        input,
        output,
        act,
        weights,
        bias,
        real_multipliers,
    })
}
