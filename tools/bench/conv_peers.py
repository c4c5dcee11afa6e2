#!/usr/bin/env python3
"""PyTorch CPU convolution and dense-layer timings on the MNIST CNN's layer
shapes at batch 64, for comparison with ``cargo bench -p quant-kernels
--bench conv`` (same shapes, same work: forward, and forward plus the input
and filter gradients).

PyTorch runs NCHW (its native layout) on 2 threads (``torch.set_num_threads``).
Each number is the median of ``--runs`` timed runs after ``--warmup`` untimed
ones, in milliseconds.

Usage::

    target/torch-venv/bin/python tools/bench/conv_peers.py [--runs 30]

Prints one JSON object: ``{"torch": {"<criterion group>": {"forward_ms": ...,
"forward_backward_ms": ...}}}``, or ``{"torch": {"skipped": "..."}}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def median_ms(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    try:
        import torch
    except ImportError as err:
        print(json.dumps({"torch": {"skipped": f"torch does not import: {err}"}}))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    # (criterion group, input NCHW, filter OIHW, padding)
    convs = [
        ("conv1_b64_28x28x1_5x5x16", (64, 1, 28, 28), (16, 1, 5, 5)),
        ("conv2_b64_14x14x16_5x5x32", (64, 16, 14, 14), (32, 16, 5, 5)),
    ]
    for name, xs, ws in convs:
        x = torch.randn(xs, requires_grad=True)
        w = torch.randn(ws, requires_grad=True)
        dy = torch.randn(xs[0], ws[0], xs[2], xs[3])

        def forward():
            with torch.no_grad():
                torch.nn.functional.conv2d(x, w, padding="same")

        def forward_backward():
            y = torch.nn.functional.conv2d(x, w, padding="same")
            torch.autograd.grad(y, (x, w), dy)

        results[name] = {
            "forward_ms": median_ms(forward, args.runs, args.warmup),
            "forward_backward_ms": median_ms(forward_backward, args.runs, args.warmup),
        }
    a = torch.randn(64, 1568, requires_grad=True)
    b = torch.randn(1568, 10, requires_grad=True)
    g = torch.randn(64, 10)

    def fc_forward():
        with torch.no_grad():
            a @ b

    def fc_forward_backward():
        torch.autograd.grad(a @ b, (a, b), g)

    results["fc_b64_1568x10"] = {
        "forward_ms": median_ms(fc_forward, args.runs, args.warmup),
        "forward_backward_ms": median_ms(fc_forward_backward, args.runs, args.warmup),
    }
    results["version"] = torch.__version__
    print(json.dumps({"torch": results}))


if __name__ == "__main__":
    main()
