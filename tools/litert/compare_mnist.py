#!/usr/bin/env python3
"""Compares quant's integer executor with LiteRT on an exported MNIST model.

Runs the MNIST test images through a float-I/O ``.tflite`` model written by
``cargo xtask export`` or ``cargo xtask train``:

1. quant: ``xtask run --graph MODEL --feed input=IMAGES.npy --fetch OUTPUT``
   (the integer executor);
2. LiteRT 2.3 with its reference kernels (``BUILTIN_REF``, "R"), its builtin
   optimized kernels without delegates ("B") and the default interpreter with
   XNNPACK ("X").

The model ends with DEQUANTIZE, so each float output is mapped back to its
output integer, ``q = round(r / S) + Z`` with the output's (S, Z) taken from
the DEQUANTIZE input: exact for R (which computes ``float32(S·(q − Z))``) and
for B and X (within 3e-5 of a step). Prints one JSON object: per kernel set,
how many output integers differ from quant's, the largest difference, how
many images' arg-max differs, and the accuracy of each.

Usage::

    target/litert-venv/bin/python tools/litert/compare_mnist.py \\
        --model target/demo/model.tflite --xtask target/debug/xtask \\
        [--data data/mnist] [--limit N] [--output logits/BiasAdd] [--threads 2]

Exit status 1 when R and quant disagree on any integer.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType


def read_idx(path: Path) -> np.ndarray:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def run_litert(model: Path, images: np.ndarray, resolver: str, threads: int) -> np.ndarray:
    kinds = {
        "ref": OpResolverType.BUILTIN_REF,
        "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    }
    if resolver == "default":
        interp = Interpreter(model_path=str(model), num_threads=threads)
    else:
        interp = Interpreter(
            model_path=str(model),
            experimental_op_resolver_type=kinds[resolver],
            num_threads=threads,
        )
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], list(images.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], images)
    interp.invoke()
    out = interp.get_output_details()[0]
    return interp.get_tensor(out["index"]).copy()


def output_params(model: Path) -> tuple[float, int]:
    """(scale, zero point) of the tensor the final DEQUANTIZE reads."""
    interp = Interpreter(model_path=str(model))
    out_index = interp.get_output_details()[0]["index"]
    for op in interp._get_ops_details():
        if op["op_name"] == "DEQUANTIZE" and out_index in list(op["outputs"]):
            src = op["inputs"][0]
            detail = next(t for t in interp.get_tensor_details() if t["index"] == src)
            scale, zp = detail["quantization"]
            return float(scale), int(zp)
    sys.exit("error: the model's output is not produced by a DEQUANTIZE (export with float I/O)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", type=Path, required=True)
    ap.add_argument("--xtask", type=Path, required=True)
    ap.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "data/mnist")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--input", default="input")
    ap.add_argument("--output", default="logits/BiasAdd")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    images = read_idx(args.data / "t10k-images.idx3-ubyte.gz")
    labels = read_idx(args.data / "t10k-labels.idx1-ubyte.gz").astype(np.int64)
    if args.limit is not None:
        images, labels = images[: args.limit], labels[: args.limit]
    x = (images.astype(np.float32) / np.float32(255.0))[..., None]
    scale, zp = output_params(args.model)

    def to_q(r: np.ndarray) -> np.ndarray:
        return np.rint(r.astype(np.float64) / scale).astype(np.int64) + zp

    with tempfile.TemporaryDirectory() as tmp:
        feed = Path(tmp) / "images.npy"
        np.save(feed, x)
        run = subprocess.run(
            [str(args.xtask), "run", "--graph", str(args.model), "--feed", f"{args.input}={feed}",
             "--fetch", args.output, "--output-dir", tmp, "--threads", str(args.threads)],
            capture_output=True, text=True,
        )
        if run.returncode != 0:
            sys.exit(f"error: xtask run failed: {run.stderr.strip()}")
        name = args.output.replace("/", "__").replace(":", "__") + ".npy"
        quant = to_q(np.load(Path(tmp) / name))

    report = {
        "model": str(args.model),
        "images": int(len(x)),
        "outputs": int(quant.size),
        "output_scale": scale,
        "output_zero_point": zp,
        "quant_accuracy": float((quant.argmax(axis=1) == labels).mean()),
        "kernel_sets": {},
    }
    for resolver in ["ref", "builtin", "default"]:
        q = to_q(run_litert(args.model, x, resolver, args.threads))
        diff = np.abs(q - quant)
        report["kernel_sets"][resolver] = {
            "differing_outputs": int((diff != 0).sum()),
            "max_difference": int(diff.max()),
            "differing_argmax": int((q.argmax(axis=1) != quant.argmax(axis=1)).sum()),
            "accuracy": float((q.argmax(axis=1) == labels).mean()),
        }
    print(json.dumps(report, indent=2))
    return 1 if report["kernel_sets"]["ref"]["differing_outputs"] else 0


if __name__ == "__main__":
    sys.exit(main())
