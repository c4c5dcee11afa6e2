#!/usr/bin/env python3
"""LiteRT timings of one .tflite model, for comparison with quant's integer
executor in ``cargo xtask bench --peers`` (same model file, same inputs).

Two kernel sets, both with ``--threads`` threads (default 2):

* ``default``: a plain ``Interpreter``, builtin kernels plus the XNNPACK
  delegate (what LiteRT users get);
* ``builtin``: ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``, the
  builtin optimized kernels without delegates.

Two measurements per kernel set:

* batch-1 latency: the median of ``--runs`` timed ``invoke()`` calls (input
  set once before; ``set_tensor`` and ``get_tensor`` excluded), after
  ``--warmup`` untimed ones, in milliseconds;
* batch-``--batch`` throughput (default 256): the input resized to that
  batch, the median of ``--batch-runs`` timed ``invoke()`` calls turned into
  examples per second.

Inputs are deterministic (seed 0): uniform in [0, 1) for a float input (the
MNIST pixel range), uniform over the whole type range for an integer input.

Usage::

    target/litert-venv/bin/python tools/bench/litert_peers.py MODEL.tflite [--threads 2]

Prints one JSON object::

    {"litert": {"model": "...", "input": {"shape": [...], "dtype": "int8"},
                "default": {"latency_b1_ms": ..., "throughput_per_s": ..., "batch": 256},
                "builtin": {...}}}

A kernel set that fails to load or run the model gets ``{"error": "..."}``;
a missing interpreter gives ``{"litert": {"skipped": "..."}}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def median_seconds(fn, runs: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_input(np, detail, batch: int):
    shape = [batch] + [int(d) for d in detail["shape"][1:]]
    rng = np.random.default_rng(0)
    dtype = np.dtype(detail["dtype"])
    if dtype.kind == "f":
        return rng.random(shape, dtype=np.float32).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


def measure(np, Interpreter, model: bytes, kind, threads: int, args) -> dict:
    def interpreter():
        if kind is None:
            return Interpreter(model_content=model, num_threads=threads)
        return Interpreter(
            model_content=model,
            num_threads=threads,
            experimental_op_resolver_type=kind,
        )

    result = {}
    # Batch 1.
    interp = interpreter()
    detail = interp.get_input_details()[0]
    if int(detail["shape"][0]) != 1:
        interp.resize_tensor_input(detail["index"], [1] + list(detail["shape"][1:]))
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], make_input(np, detail, 1))
    result["latency_b1_ms"] = median_seconds(interp.invoke, args.runs, args.warmup) * 1e3
    # Large batch.
    interp = interpreter()
    detail = interp.get_input_details()[0]
    interp.resize_tensor_input(detail["index"], [args.batch] + list(detail["shape"][1:]))
    interp.allocate_tensors()
    detail = interp.get_input_details()[0]
    interp.set_tensor(detail["index"], make_input(np, detail, args.batch))
    seconds = median_seconds(interp.invoke, args.batch_runs, 2)
    result["throughput_per_s"] = args.batch / seconds
    result["batch"] = args.batch
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="the .tflite file")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--batch-runs", type=int, default=30)
    args = parser.parse_args()
    try:
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError as err:
        print(json.dumps({"litert": {"skipped": f"ai_edge_litert does not import: {err}"}}))
        return
    with open(args.model, "rb") as f:
        model = f.read()
    out = {"model": args.model, "threads": args.threads}
    try:
        detail = Interpreter(model_content=model).get_input_details()[0]
        out["input"] = {
            "shape": [int(d) for d in detail["shape"]],
            "dtype": np.dtype(detail["dtype"]).name,
        }
    except Exception as err:
        out["error"] = str(err).strip()
        print(json.dumps({"litert": out}))
        return
    kinds = {
        "default": None,
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    }
    for name, kind in kinds.items():
        try:
            out[name] = measure(np, Interpreter, model, kind, args.threads, args)
        except Exception as err:  # load, resize, allocate or invoke failures
            out[name] = {"error": str(err).strip()}
    print(json.dumps({"litert": out}))


if __name__ == "__main__":
    main()
