#!/usr/bin/env python3
"""Fake-quant throughput of TensorFlow and PyTorch, for comparison with
``cargo bench -p quant-kernels --bench fake_quant``.

The work is the same as in the Rust benchmark: 16M float32 values spanning
beyond the range [-1, 1], 8 bits, full range:

* ``per_tensor``: per-tensor forward
  (``tf.quantization.fake_quant_with_min_max_vars`` /
  ``torch.fake_quantize_per_tensor_affine``);
* ``per_channel``: per-channel forward over 64 channels, the last dimension
  (``fake_quant_with_min_max_vars_per_channel`` /
  ``torch.fake_quantize_per_channel_affine`` with ``axis=1``);
* ``per_tensor_grad``: per-tensor gradient. TensorFlow:
  ``tf.raw_ops.FakeQuantWithMinMaxVarsGradient`` (dx, dmin, dmax in one op).
  PyTorch: the autograd backward of ``fake_quantize_per_tensor_affine``
  alone (it multiplies by a mask cached in the forward), plus
  ``per_tensor_fwd_bwd`` for forward and backward together.

Each framework runs on 2 threads (TensorFlow: intra-op parallelism 2, ops
under ``tf.function``; PyTorch: ``torch.set_num_threads(2)``) and is
optional: a framework that does not import is reported as skipped. Every
measurement is the median of ``--runs`` timed runs after ``--warmup``
untimed ones, reported in GB/s of input (the 64 MiB of ``x``, 10^9 bytes per
GB), like the Rust benchmark's ratios.

PyTorch's fake quant is a different function (ties to even, a wider
gradient mask; reference-semantics 5.4b): compare speed, never values.

Usage::

    target/tf-venv/bin/python tools/bench/fake_quant_peers.py [--runs 20]

Prints one JSON object: ``{"tensorflow": {...}, "torch": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Callable

import numpy as np

LEN = 16 << 20
CHANNELS = 64
NUM_BITS = 8
THREADS = 2


def inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x in [-1.5, 1.5), g in [-1, 1), per-channel ranges around [-1, 1]."""
    rng = np.random.default_rng(1)
    x = rng.uniform(-1.5, 1.5, size=LEN).astype(np.float32)
    g = rng.uniform(-1.0, 1.0, size=LEN).astype(np.float32)
    mins = (-1.0 - np.arange(CHANNELS) / 64.0).astype(np.float32)
    maxs = (1.0 + np.arange(CHANNELS) / 128.0).astype(np.float32)
    return x, g, mins, maxs


def median_gbps(fn: Callable[[], object], warmup: int, runs: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return round(LEN * 4 / statistics.median(times) / 1e9, 3)


def bench_tensorflow(warmup: int, runs: int) -> dict:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import tensorflow as tf
    except ImportError as e:  # pragma: no cover - depends on the machine
        return {"skipped": f"tensorflow not importable: {e}"}

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    x_np, g_np, mins_np, maxs_np = inputs()
    x = tf.constant(x_np)
    g = tf.constant(g_np)
    x2 = tf.reshape(x, [-1, CHANNELS])
    lo, hi = tf.constant(-1.0), tf.constant(1.0)
    mins, maxs = tf.constant(mins_np), tf.constant(maxs_np)

    @tf.function
    def per_tensor(x):
        return tf.quantization.fake_quant_with_min_max_vars(
            x, lo, hi, num_bits=NUM_BITS, narrow_range=False)

    @tf.function
    def per_channel(x):
        return tf.quantization.fake_quant_with_min_max_vars_per_channel(
            x, mins, maxs, num_bits=NUM_BITS, narrow_range=False)

    @tf.function
    def per_tensor_grad(g, x):
        return tf.raw_ops.FakeQuantWithMinMaxVarsGradient(
            gradients=g, inputs=x, min=lo, max=hi, num_bits=NUM_BITS,
            narrow_range=False)

    # Eager tensors on the CPU are computed when the call returns.
    return {
        "version": tf.__version__,
        "threads": THREADS,
        "per_tensor_gbps": median_gbps(lambda: per_tensor(x), warmup, runs),
        "per_channel_gbps": median_gbps(lambda: per_channel(x2), warmup,
                                        runs),
        "per_tensor_grad_gbps": median_gbps(lambda: per_tensor_grad(g, x),
                                            warmup, runs),
    }


def bench_torch(warmup: int, runs: int) -> dict:
    try:
        import torch
    except ImportError as e:  # pragma: no cover - depends on the machine
        return {"skipped": f"torch not importable: {e}"}

    torch.set_num_threads(THREADS)
    x_np, g_np, mins_np, maxs_np = inputs()
    x = torch.from_numpy(x_np)
    g = torch.from_numpy(g_np)
    x2 = x.view(-1, CHANNELS)
    qmin, qmax = 0, (1 << NUM_BITS) - 1

    def affine(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        scale = (hi - lo) / np.float32(qmax - qmin)
        zero_point = np.clip(np.round(qmin - lo / scale), qmin, qmax)
        return scale.astype(np.float32), zero_point.astype(np.int32)

    scale, zero_point = affine(np.float32(-1.0), np.float32(1.0))
    scale, zero_point = float(scale), int(zero_point)
    scales, zero_points = affine(mins_np, maxs_np)
    scales = torch.from_numpy(scales)
    zero_points = torch.from_numpy(zero_points)

    def per_tensor():
        return torch.fake_quantize_per_tensor_affine(
            x, scale, zero_point, qmin, qmax)

    def per_channel():
        return torch.fake_quantize_per_channel_affine(
            x2, scales, zero_points, 1, qmin, qmax)

    xg = x.clone().requires_grad_(True)
    y = torch.fake_quantize_per_tensor_affine(xg, scale, zero_point, qmin,
                                              qmax)

    def backward():
        return torch.autograd.grad(y, xg, g, retain_graph=True)

    def forward_backward():
        out = torch.fake_quantize_per_tensor_affine(xg, scale, zero_point,
                                                    qmin, qmax)
        return torch.autograd.grad(out, xg, g)

    with torch.no_grad():
        fwd = median_gbps(per_tensor, warmup, runs)
        pc = median_gbps(per_channel, warmup, runs)
    return {
        "version": torch.__version__,
        "threads": THREADS,
        "per_tensor_gbps": fwd,
        "per_channel_gbps": pc,
        "per_tensor_grad_gbps": median_gbps(backward, warmup, runs),
        "per_tensor_fwd_bwd_gbps": median_gbps(forward_backward, warmup,
                                               runs),
        "note": "grad = autograd backward only (mask cached by the forward)",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    result = {
        "elements": LEN,
        "input_bytes": LEN * 4,
        "tensorflow": bench_tensorflow(args.warmup, args.runs),
        "torch": bench_torch(args.warmup, args.runs),
    }
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
