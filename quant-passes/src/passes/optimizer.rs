//! Optimizers as update ops: SGD, momentum and Adam, with L2 weight decay,
//! and the learning-rate schedules the training loop feeds.
//!
//! # What it does
//!
//! [`apply_gradients`] takes `(variable, gradient)` pairs and a scalar
//! learning-rate tensor (normally the `learning_rate` placeholder of
//! [`learning_rate_placeholder`], fed every step from an [`LrSchedule`]),
//! and appends, as TensorFlow 1's `Optimizer.apply_gradients` does and with
//! its names:
//!
//! - the slot variables, zero-initialised and not trainable:
//!   `<var>/Momentum` for momentum, `<var>/Adam` (first moment) and
//!   `<var>/Adam_1` (second moment) for Adam, plus Adam's `beta1_power` and
//!   `beta2_power` (initialised to β₁ and β₂);
//! - the constant hyper-parameters under the optimizer's scope
//!   (`Momentum/momentum`, `Adam/beta1`, `Adam/beta2`, `Adam/epsilon`);
//! - one update op per variable, `GradientDescent/update_<var>/ApplyGradientDescent`,
//!   `Momentum/update_<var>/ApplyMomentum` or `Adam/update_<var>/ApplyAdam`
//!   (the scope is made unique, `Adam_1`, ..., if taken);
//! - for Adam, the beta-power updates `Adam/mul = beta1_power · beta1`,
//!   `Adam/Assign(beta1_power, Adam/mul)`, and `Adam/mul_1`,
//!   `Adam/Assign_1` for β₂. The executor reads variables at the start of a
//!   run, so the update ops of a step see the powers of that step (βᵗ) and
//!   the next step sees βᵗ⁺¹, as TensorFlow's control dependencies arrange.
//!
//! **Weight decay** (L2): with `weight_decay = λ > 0`, the gradient of every
//! variable of rank 2 or more (convolution and depthwise filters, fully
//! connected weights) becomes `grad + λ·var` before the update
//! (`<scope>/update_<var>/weight_decay/mul` and `.../add`, with λ in
//! `<scope>/weight_decay`). Variables of rank 0 or 1 (biases, batch-norm
//! scales and offsets) are never decayed.
//!
//! The returned [`TrainOp`] lists the outputs to fetch once per training
//! step. The update op types are in [`crate::OPTIMIZER_OP_TYPES`], so the
//! training-op check refuses to rewrite the graph again afterwards.
//!
//! # Preconditions
//!
//! Each variable is a `Variable` or `VariableV2` node of dtype f32 with a
//! fully known shape, listed once; each gradient has the variable's shape;
//! the learning rate is an f32 scalar; the hyper-parameters pass
//! [`OptimizerConfig::validate`]. Otherwise an [`OptimizerError`] names the
//! node or setting at fault and the graph is left as it was.
//!
//! # Before → After
//!
//! ```text
//! w (Variable)   grad_w                 w ──────────────┐
//!                                ⇒      w/Momentum ─────┤
//!                                       learning_rate ──┼─ Momentum/update_w/ApplyMomentum
//!                                       grad_w ─────────┤
//!                                       Momentum/momentum
//! ```

use quant_core::builder::GraphBuilder;
use quant_core::{Attrs, DType, Graph, GraphError, NodeId, OpRegistry, OutletId, Shape, Tensor};
use std::collections::BTreeSet;

/// The name of the learning-rate placeholder.
pub const LEARNING_RATE: &str = "learning_rate";

/// Which update rule to use, with its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OptimizerKind {
    /// Plain gradient descent: `var -= lr · grad`.
    Sgd,
    /// Momentum (TensorFlow's `MomentumOptimizer`).
    Momentum {
        /// The accumulator decay.
        momentum: f32,
        /// Nesterov's form.
        nesterov: bool,
    },
    /// Adam (TensorFlow 1's `AdamOptimizer`).
    Adam {
        /// First-moment decay β₁.
        beta1: f32,
        /// Second-moment decay β₂.
        beta2: f32,
        /// ε, added to √v.
        epsilon: f32,
    },
}

/// The optimizer [`apply_gradients`] adds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OptimizerConfig {
    /// The update rule.
    pub kind: OptimizerKind,
    /// The L2 weight-decay factor λ folded into the gradients of variables
    /// of rank ≥ 2 (see the module docs); 0 disables it.
    pub weight_decay: f32,
}

impl OptimizerKind {
    /// Adam with TensorFlow's defaults: β₁ 0.9, β₂ 0.999, ε 1e-8.
    pub const ADAM: OptimizerKind = OptimizerKind::Adam {
        beta1: 0.9,
        beta2: 0.999,
        epsilon: 1e-8,
    };
}

impl OptimizerConfig {
    /// The optimizer's name: its scope and the suffix of its slot variables
    /// (`GradientDescent`, `Momentum`, `Adam`).
    pub fn name(&self) -> &'static str {
        match self.kind {
            OptimizerKind::Sgd => "GradientDescent",
            OptimizerKind::Momentum { .. } => "Momentum",
            OptimizerKind::Adam { .. } => "Adam",
        }
    }

    /// Checks the hyper-parameters: `momentum ≥ 0`, `0 ≤ β₁, β₂ < 1`,
    /// `ε > 0`, `weight_decay ≥ 0`, all finite.
    pub fn validate(&self) -> Result<(), OptimizerError> {
        let check = |setting: &'static str, value: f32, ok: bool| {
            if value.is_finite() && ok {
                Ok(())
            } else {
                Err(OptimizerError::Setting { setting, value })
            }
        };
        check("weight_decay", self.weight_decay, self.weight_decay >= 0.0)?;
        match self.kind {
            OptimizerKind::Sgd => Ok(()),
            OptimizerKind::Momentum { momentum, .. } => {
                check("momentum", momentum, momentum >= 0.0)
            }
            OptimizerKind::Adam {
                beta1,
                beta2,
                epsilon,
            } => {
                check("beta1", beta1, (0.0..1.0).contains(&beta1))?;
                check("beta2", beta2, (0.0..1.0).contains(&beta2))?;
                check("epsilon", epsilon, epsilon > 0.0)
            }
        }
    }
}

/// Why [`apply_gradients`] refused; the graph is unchanged.
#[derive(Debug, thiserror::Error)]
pub enum OptimizerError {
    /// A hyper-parameter out of its range.
    #[error("optimizer setting {setting} = {value} is out of range")]
    Setting {
        /// The setting.
        setting: &'static str,
        /// The value given.
        value: f32,
    },
    /// A node given as a variable is not one.
    #[error(
        "'{node}' is a {op}, not a variable: only Variable and VariableV2 nodes can be trained"
    )]
    NotAVariable {
        /// The node.
        node: String,
        /// Its op type.
        op: String,
    },
    /// A variable whose dtype or shape does not allow slots.
    #[error("variable '{node}': {message}")]
    Variable {
        /// The variable.
        node: String,
        /// What is wrong.
        message: String,
    },
    /// The same variable was given twice.
    #[error("variable '{0}' is listed twice")]
    Duplicate(String),
    /// Adding a node failed (a gradient or learning rate of the wrong
    /// shape or dtype, a name clash).
    #[error("while adding the optimizer for '{node}': {source}")]
    Graph {
        /// The variable being handled.
        node: String,
        /// The underlying error.
        source: GraphError,
    },
}

/// What [`apply_gradients`] added.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainOp {
    /// The optimizer's scope (`Adam`, or `Adam_1` if that was taken).
    pub scope: String,
    /// The outputs to fetch once per training step: each variable's update
    /// (its updated value), in the order given, then Adam's two beta-power
    /// assignments.
    pub updates: Vec<OutletId>,
    /// The slot variables created, per variable in the order given, then
    /// `beta1_power` and `beta2_power`.
    pub slots: Vec<NodeId>,
}

impl TrainOp {
    /// The names of [`TrainOp::updates`], as `Session::run` takes fetches.
    pub fn fetch_names(&self, graph: &Graph) -> Vec<String> {
        self.updates.iter().map(|&o| graph.outlet_name(o)).collect()
    }
}

/// The scalar f32 placeholder [`LEARNING_RATE`], created at the root scope
/// unless the graph has it already.
pub fn learning_rate_placeholder(graph: &mut Graph) -> Result<OutletId, OptimizerError> {
    if let Some(id) = graph.id(LEARNING_RATE) {
        return Ok(id.into());
    }
    let mut b = GraphBuilder::extend(std::mem::take(graph), OpRegistry::builtin());
    let lr = b.placeholder(LEARNING_RATE, DType::F32, Shape::scalar());
    *graph = b.finish();
    lr.map_err(|source| OptimizerError::Graph {
        node: LEARNING_RATE.into(),
        source,
    })
}

/// Whether weight decay applies to a variable of this shape: rank ≥ 2.
pub fn is_decayed(shape: &[usize]) -> bool {
    shape.len() >= 2
}

/// Adds the optimizer of `config` for `grads_and_vars` (variable node,
/// gradient wire) with learning rate `learning_rate`; see the module docs.
pub fn apply_gradients(
    graph: &mut Graph,
    config: &OptimizerConfig,
    grads_and_vars: &[(NodeId, OutletId)],
    learning_rate: OutletId,
) -> Result<TrainOp, OptimizerError> {
    config.validate()?;
    let mut shapes = Vec::with_capacity(grads_and_vars.len());
    let mut seen = BTreeSet::new();
    for &(var, _) in grads_and_vars {
        let node = graph.node(var);
        let name = node.name().to_string();
        if !matches!(node.op(), "Variable" | "VariableV2") {
            return Err(OptimizerError::NotAVariable {
                node: name,
                op: node.op().into(),
            });
        }
        let fact = graph.fact(var.into());
        if fact.dtype != Some(DType::F32) {
            return Err(OptimizerError::Variable {
                node: name,
                message: format!("dtype {:?} is not f32", fact.dtype),
            });
        }
        let Some(shape) = fact.shape.as_ref().and_then(Shape::as_known) else {
            return Err(OptimizerError::Variable {
                node: name,
                message: "the shape must be fully known to create its slots".into(),
            });
        };
        if !seen.insert(var) {
            return Err(OptimizerError::Duplicate(name));
        }
        shapes.push(shape);
    }
    let mut b = GraphBuilder::extend(graph.clone(), OpRegistry::builtin());
    let train = build(&mut b, config, grads_and_vars, &shapes, learning_rate)?;
    *graph = b.finish();
    Ok(train)
}

/// The graph inputs of the update rule's hyper-parameters.
#[derive(Clone, Copy)]
enum Hyper {
    Sgd,
    Momentum {
        momentum: OutletId,
        nesterov: bool,
    },
    Adam {
        beta1: OutletId,
        beta2: OutletId,
        epsilon: OutletId,
        beta1_power: OutletId,
        beta2_power: OutletId,
    },
}

fn build(
    b: &mut GraphBuilder<'_>,
    config: &OptimizerConfig,
    grads_and_vars: &[(NodeId, OutletId)],
    shapes: &[Vec<usize>],
    lr: OutletId,
) -> Result<TrainOp, OptimizerError> {
    let opt = config.name();
    let scope = b.unique_scope(opt);
    let in_scope = |what: &str| format!("{scope}/{what}");
    let at = |node: &str| {
        let node = node.to_string();
        move |source| OptimizerError::Graph {
            node: node.clone(),
            source,
        }
    };
    let scalar = |b: &mut GraphBuilder<'_>, name: &str, v: f32| {
        b.constant(name, Tensor::scalar(v)).map_err(at(name))
    };
    let mut train = TrainOp {
        scope: scope.clone(),
        updates: Vec::new(),
        slots: Vec::new(),
    };
    let decay = if config.weight_decay > 0.0 {
        Some(scalar(b, &in_scope("weight_decay"), config.weight_decay)?)
    } else {
        None
    };
    // Hyper-parameter constants, and Adam's beta powers.
    let hyper = match config.kind {
        OptimizerKind::Sgd => Hyper::Sgd,
        OptimizerKind::Momentum { momentum, nesterov } => Hyper::Momentum {
            momentum: scalar(b, &in_scope("momentum"), momentum)?,
            nesterov,
        },
        OptimizerKind::Adam {
            beta1,
            beta2,
            epsilon,
        } => Hyper::Adam {
            beta1: scalar(b, &in_scope("beta1"), beta1)?,
            beta2: scalar(b, &in_scope("beta2"), beta2)?,
            epsilon: scalar(b, &in_scope("epsilon"), epsilon)?,
            beta1_power: b
                .variable("beta1_power", Tensor::scalar(beta1), false)
                .map_err(at("beta1_power"))?,
            beta2_power: b
                .variable("beta2_power", Tensor::scalar(beta2), false)
                .map_err(at("beta2_power"))?,
        },
    };
    for (&(var, grad), shape) in grads_and_vars.iter().zip(shapes) {
        let var_name = b.graph().node(var).name().to_string();
        let err = at(&var_name);
        let update = format!("{scope}/update_{var_name}");
        let var = OutletId::from(var);
        let grad = match decay {
            Some(lambda) if is_decayed(shape) => {
                let scaled = b
                    .binary("Mul", &format!("{update}/weight_decay/mul"), lambda, var)
                    .map_err(&err)?;
                b.binary("AddV2", &format!("{update}/weight_decay/add"), grad, scaled)
                    .map_err(&err)?
            }
            _ => grad,
        };
        let mut slot = |b: &mut GraphBuilder<'_>,
                        suffix: &str|
         -> Result<OutletId, OptimizerError> {
            let zeros = Tensor::zeros(DType::F32, shape).map_err(|e| OptimizerError::Variable {
                node: var_name.clone(),
                message: e.to_string(),
            })?;
            let s = b
                .variable(&format!("{var_name}/{suffix}"), zeros, false)
                .map_err(at(&var_name))?;
            train.slots.push(s.node);
            Ok(s)
        };
        let mut attrs = Attrs::new();
        attrs.insert("use_locking".into(), false.into());
        let (op, inputs) = match hyper {
            Hyper::Sgd => ("ApplyGradientDescent", vec![var, lr, grad]),
            Hyper::Momentum { momentum, nesterov } => {
                attrs.insert("use_nesterov".into(), nesterov.into());
                let accum = slot(b, "Momentum")?;
                ("ApplyMomentum", vec![var, accum, lr, grad, momentum])
            }
            Hyper::Adam {
                beta1,
                beta2,
                epsilon,
                beta1_power,
                beta2_power,
            } => {
                attrs.insert("use_nesterov".into(), false.into());
                let m = slot(b, "Adam")?;
                let v = slot(b, "Adam_1")?;
                let inputs = vec![
                    var,
                    m,
                    v,
                    beta1_power,
                    beta2_power,
                    lr,
                    beta1,
                    beta2,
                    epsilon,
                    grad,
                ];
                ("ApplyAdam", inputs)
            }
        };
        let id = b
            .add(op, &format!("{update}/{op}"), &inputs, attrs)
            .map_err(&err)?;
        train.updates.push(id.into());
    }
    if let Hyper::Adam {
        beta1,
        beta2,
        beta1_power,
        beta2_power,
        ..
    } = hyper
    {
        for (power, beta, suffix) in [(beta1_power, beta1, ""), (beta2_power, beta2, "_1")] {
            let name = in_scope(&format!("mul{suffix}"));
            let next = b.binary("Mul", &name, power, beta).map_err(at(&name))?;
            let name = in_scope(&format!("Assign{suffix}"));
            let assign = b
                .add("Assign", &name, &[power, next], Attrs::new())
                .map_err(at(&name))?;
            train.updates.push(assign.into());
            train.slots.push(power.node);
        }
    }
    Ok(train)
}

/// The learning rate as a function of the step (0-based: the rate of the
/// first update is `at(0)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LrSchedule {
    /// `lr` at every step.
    Constant(f32),
    /// `lr · gamma^⌊step / every⌋`: multiplied by `gamma` every `every`
    /// steps (TensorFlow's staircase `exponential_decay`). `every = 0` never
    /// decays.
    Step {
        /// The initial rate.
        lr: f32,
        /// Steps between decays.
        every: u64,
        /// The factor applied at each decay.
        gamma: f32,
    },
    /// Cosine decay from `lr` at step 0 to `final_lr` at `total_steps`:
    /// `final_lr + (lr − final_lr) · (1 + cos(π · step / total_steps)) / 2`,
    /// and `final_lr` from `total_steps` on (TensorFlow's `cosine_decay`
    /// with `alpha = final_lr / lr`).
    Cosine {
        /// The initial rate.
        lr: f32,
        /// The step at which `final_lr` is reached.
        total_steps: u64,
        /// The rate from `total_steps` on.
        final_lr: f32,
    },
}

impl LrSchedule {
    /// The learning rate of step `step` (computed in f64, rounded once).
    pub fn at(&self, step: u64) -> f32 {
        match *self {
            LrSchedule::Constant(lr) => lr,
            LrSchedule::Step { lr, every, gamma } => {
                let decays = step.checked_div(every).unwrap_or(0);
                let exponent = i32::try_from(decays).unwrap_or(i32::MAX);
                (f64::from(lr) * f64::from(gamma).powi(exponent)) as f32
            }
            LrSchedule::Cosine {
                lr,
                total_steps,
                final_lr,
            } => {
                if step >= total_steps {
                    return final_lr;
                }
                let progress = step as f64 / total_steps as f64;
                let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
                (f64::from(final_lr) + (f64::from(lr) - f64::from(final_lr)) * cosine) as f32
            }
        }
    }
}
