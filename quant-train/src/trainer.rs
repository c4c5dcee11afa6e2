//! Running training steps and evaluations on the executor.

use crate::error::TrainError;
use crate::head::{GLOBAL_STEP, LABELS, TrainingGraph};
use quant_core::Tensor;
use quant_core::data::{Batch, BatchOptions, MnistSplit};
use quant_kernels::session::Session;
use quant_passes::passes::optimizer::{LEARNING_RATE, LrSchedule};
use std::time::Instant;

/// What one training step measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepResult {
    /// The global step after the update (1 for the first).
    pub step: u64,
    /// The batch's mean loss (before the update).
    pub loss: f32,
    /// Examples of the batch the logits classified correctly.
    pub correct: usize,
    /// Examples in the batch.
    pub examples: usize,
    /// The learning rate used.
    pub learning_rate: f32,
}

/// Progress through a run of [`Trainer::train_until`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Progress {
    /// The step just taken.
    pub last: StepResult,
    /// The step the run stops at.
    pub until: u64,
    /// The epoch of the step (0-based).
    pub epoch: u64,
    /// Mean loss over the run so far.
    pub mean_loss: f64,
    /// Training accuracy over the run so far.
    pub accuracy: f64,
    /// Images per second over the run so far.
    pub images_per_sec: f64,
}

/// A summary of [`Trainer::train_until`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunSummary {
    /// Steps taken in this run.
    pub steps: u64,
    /// Mean loss over the run.
    pub mean_loss: f64,
    /// Training accuracy over the run.
    pub accuracy: f64,
    /// Images per second.
    pub images_per_sec: f64,
    /// Wall-clock seconds.
    pub seconds: f64,
}

/// Trains a [`TrainingGraph`] with a learning-rate schedule.
///
/// Where the data stands is a function of the global step alone: step `s`
/// uses batch `s mod B` of epoch `⌊s / B⌋` (`B` batches per epoch, the
/// last partial batch dropped, each epoch in its seeded order). A session
/// restored from a checkpoint therefore continues exactly as an
/// uninterrupted run would.
pub struct Trainer {
    session: Session,
    input: String,
    fetches: Vec<String>,
    schedule: LrSchedule,
}

impl Trainer {
    /// A trainer with fresh variables (their initial values).
    pub fn new(graph: TrainingGraph, schedule: LrSchedule) -> Result<Trainer, TrainError> {
        Ok(Trainer {
            session: Session::new(graph.graph)?,
            input: graph.input,
            fetches: graph.fetches,
            schedule,
        })
    }

    /// The session (variables, checkpoints).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The session, mutably (to restore a checkpoint).
    pub fn session_mut(&mut self) -> &mut Session {
        &mut self.session
    }

    /// Training steps taken so far (the [`GLOBAL_STEP`] variable).
    pub fn global_step(&self) -> u64 {
        self.session
            .variable(GLOBAL_STEP)
            .and_then(|t| t.array::<i64>().ok()?.iter().next().copied())
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(0)
    }

    /// One step on `batch`: forward, backward, every update.
    pub fn step(&mut self, batch: &Batch) -> Result<StepResult, TrainError> {
        let step = self.global_step();
        let learning_rate = self.schedule.at(step);
        let fetches: Vec<&str> = self.fetches.iter().map(String::as_str).collect();
        let out = self.session.run(
            &[
                (self.input.as_str(), batch.images.clone()),
                (LABELS, batch.labels.clone()),
                (LEARNING_RATE, Tensor::scalar(learning_rate)),
            ],
            &fetches,
        )?;
        let loss = scalar_f32(&out[0], &self.fetches[0])?;
        if !loss.is_finite() {
            return Err(TrainError::NonFiniteLoss {
                step: step + 1,
                loss,
            });
        }
        let labels = labels(&batch.labels)?;
        let correct = count_correct(&out[1], &labels, &self.fetches[1])?;
        Ok(StepResult {
            step: step + 1,
            loss,
            correct,
            examples: labels.len(),
            learning_rate,
        })
    }

    /// Trains on `data` until the global step reaches `until` (batches as
    /// described on [`Trainer`]; `options.drop_last` is forced on so every
    /// epoch has the same number of steps), calling `on_step` after each.
    pub fn train_until(
        &mut self,
        data: &MnistSplit,
        options: &BatchOptions,
        until: u64,
        mut on_step: impl FnMut(&Progress),
    ) -> Result<RunSummary, TrainError> {
        let options = BatchOptions {
            drop_last: true,
            ..options.clone()
        };
        let per_epoch = Self::steps_per_epoch(data, options.batch_size);
        if per_epoch == 0 {
            return Err(TrainError::BadOutput {
                name: "data".into(),
                message: format!(
                    "{} examples make no batch of {}",
                    data.len(),
                    options.batch_size
                ),
            });
        }
        let start = Instant::now();
        let (mut steps, mut loss_sum, mut correct, mut seen) = (0u64, 0f64, 0usize, 0usize);
        while self.global_step() < until {
            let step = self.global_step();
            let epoch = step / per_epoch;
            let skip = (step % per_epoch) as usize;
            let remaining = (until - step) as usize;
            for batch in data.batches(&options, epoch)?.skip(skip).take(remaining) {
                let r = self.step(&batch)?;
                steps += 1;
                loss_sum += f64::from(r.loss);
                correct += r.correct;
                seen += r.examples;
                let seconds = start.elapsed().as_secs_f64().max(1e-9);
                on_step(&Progress {
                    last: r,
                    until,
                    epoch,
                    mean_loss: loss_sum / steps as f64,
                    accuracy: correct as f64 / seen as f64,
                    images_per_sec: seen as f64 / seconds,
                });
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        Ok(RunSummary {
            steps,
            mean_loss: if steps == 0 {
                0.0
            } else {
                loss_sum / steps as f64
            },
            accuracy: if seen == 0 {
                0.0
            } else {
                correct as f64 / seen as f64
            },
            images_per_sec: seen as f64 / seconds.max(1e-9),
            seconds,
        })
    }

    /// The steps of one epoch over `data` with batch size `batch_size`.
    pub fn steps_per_epoch(data: &MnistSplit, batch_size: usize) -> u64 {
        (data.len() / batch_size.max(1)) as u64
    }
}

/// The fraction of `data` that `session` classifies correctly: `logits`
/// computed from `input` in batches of `batch_size`, arg-max against the
/// labels (ties go to the lower class).
pub fn evaluate(
    session: &mut Session,
    input: &str,
    logits: &str,
    data: &MnistSplit,
    batch_size: usize,
) -> Result<f64, TrainError> {
    let options = BatchOptions {
        batch_size,
        shuffle: false,
        seed: 0,
        drop_last: false,
    };
    let (mut correct, mut seen) = (0usize, 0usize);
    for batch in data.batches(&options, 0)? {
        let out = session.run(&[(input, batch.images.clone())], &[logits])?;
        let labels = labels(&batch.labels)?;
        correct += count_correct(&out[0], &labels, logits)?;
        seen += labels.len();
    }
    Ok(if seen == 0 {
        0.0
    } else {
        correct as f64 / seen as f64
    })
}

fn scalar_f32(t: &Tensor, name: &str) -> Result<f32, TrainError> {
    t.array::<f32>()
        .ok()
        .filter(|a| a.len() == 1)
        .and_then(|a| a.iter().next().copied())
        .ok_or_else(|| TrainError::BadOutput {
            name: name.into(),
            message: format!("expected an f32 scalar, found {t:?}"),
        })
}

pub(crate) fn labels(t: &Tensor) -> Result<Vec<i64>, TrainError> {
    t.array::<i64>()
        .map(|a| a.iter().copied().collect())
        .map_err(|e| TrainError::BadOutput {
            name: LABELS.into(),
            message: e.to_string(),
        })
}

/// How many rows of `[N, C]` logits have their maximum at the label.
pub(crate) fn count_correct(
    logits: &Tensor,
    labels: &[i64],
    name: &str,
) -> Result<usize, TrainError> {
    let bad = |message: String| TrainError::BadOutput {
        name: name.into(),
        message,
    };
    let a = logits.array::<f32>().map_err(|e| bad(e.to_string()))?;
    let shape = a.shape();
    if shape.len() != 2 || shape[0] != labels.len() {
        return Err(bad(format!(
            "expected [{}, classes] logits, found {shape:?}",
            labels.len()
        )));
    }
    let rows = a
        .view()
        .into_dimensionality::<ndarray::Ix2>()
        .map_err(|e| bad(e.to_string()))?;
    Ok(rows
        .rows()
        .into_iter()
        .zip(labels)
        .filter(|&(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .fold((0usize, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
                    if v > bv { (i, v) } else { (bi, bv) }
                })
                .0;
            i64::try_from(best).is_ok_and(|b| b == label)
        })
        .count())
}
