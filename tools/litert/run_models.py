#!/usr/bin/env python3
"""Batch runner: runs many .tflite models in LiteRT in one Python process.

quant's LiteRT tests write hundreds of small models and want the outputs of
each under several kernel sets without paying the interpreter import per
model. This script reads one JSON job file, runs every model under the kernel
sets it names, writes each output as a .npy file and reports, per model and
kernel set, either the output files or the stage that failed (load, resize,
allocate, set_input, invoke) with LiteRT's message. A failing model does not
stop the batch.

Kernel sets ("resolvers"):

* ``ref``: ``OpResolverType.BUILTIN_REF``, the reference kernels (R);
* ``builtin``: ``OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES``, the
  builtin optimized kernels without delegates (B);
* ``default``: a plain ``Interpreter``, builtin kernels plus the XNNPACK
  delegate (X).

Job file::

    {"num_threads": 1,                      # default for every model
     "models": [
       {"name": "conv_u8_0",                # unique, used in output file names
        "path": "conv_u8_0.tflite",         # relative paths are relative to the job file
        "inputs": ["conv_u8_0.in0.npy"],    # in the model's input order
        "resolvers": ["ref", "builtin", "default"],
        "num_threads": 1}                   # optional override
     ]}

Each input is resized to its .npy's shape when the model declares another
one, and cast to the input tensor's dtype only if the .npy has the same
dtype (a dtype mismatch is reported as a ``set_input`` error).

Outputs go to ``--out DIR`` (default: the job file's directory) as
``<name>.<resolver>.<k>.npy``. The result is written as JSON lines to
``--result FILE`` (default: stdout), one line per model, flushed as soon as
the model is done, so that if the process dies (LiteRT aborts on some
illegal models instead of returning an error) the caller knows which model
was running: the line ``{"started": name}`` precedes each model's result::

    {"started": "conv_u8_0"}
    {"name": "conv_u8_0", "runs": {
        "ref": {"ok": true, "outputs": ["conv_u8_0.ref.0.npy"], "seconds": 0.001},
        "default": {"ok": false, "stage": "allocate", "error": "..."}}}

The last line is ``{"done": true, "models": N}``.

Usage::

    target/litert-venv/bin/python tools/litert/run_models.py JOB.json [--out DIR] [--result FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
from ai_edge_litert.interpreter import Interpreter, OpResolverType

RESOLVERS = {
    "ref": OpResolverType.BUILTIN_REF,
    "builtin": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    "default": None,
}


class StageError(Exception):
    """A failure in one named stage of running a model."""

    def __init__(self, stage: str, error: BaseException | str):
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = str(error).strip()


def make_interpreter(model: bytes, resolver: str, num_threads: int) -> Interpreter:
    kind = RESOLVERS[resolver]
    if kind is None:
        return Interpreter(model_content=model, num_threads=num_threads)
    return Interpreter(
        model_content=model,
        num_threads=num_threads,
        experimental_op_resolver_type=kind,
    )


def run_one(model: bytes, inputs: list[np.ndarray], resolver: str, num_threads: int):
    """Runs one model under one kernel set; returns its output arrays."""
    try:
        interp = make_interpreter(model, resolver, num_threads)
    except Exception as err:  # LiteRT raises ValueError/RuntimeError
        raise StageError("load", err) from err
    details = interp.get_input_details()
    if len(details) != len(inputs):
        raise StageError(
            "set_input", f"model has {len(details)} inputs, job gives {len(inputs)}"
        )
    try:
        for d, x in zip(details, inputs):
            if tuple(d["shape"]) != x.shape:
                interp.resize_tensor_input(d["index"], list(x.shape), strict=False)
    except Exception as err:
        raise StageError("resize", err) from err
    try:
        interp.allocate_tensors()
    except Exception as err:
        raise StageError("allocate", err) from err
    try:
        for d, x in zip(interp.get_input_details(), inputs):
            if np.dtype(d["dtype"]) != x.dtype:
                raise ValueError(
                    f"input {d['name']!r} is {np.dtype(d['dtype'])}, the .npy is {x.dtype}"
                )
            interp.set_tensor(d["index"], x)
    except Exception as err:
        raise StageError("set_input", err) from err
    try:
        interp.invoke()
    except Exception as err:
        raise StageError("invoke", err) from err
    return [np.array(interp.get_tensor(d["index"])) for d in interp.get_output_details()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("job", help="the JSON job file")
    parser.add_argument("--out", help="directory for output .npy files")
    parser.add_argument("--result", help="JSON-lines result file (default: stdout)")
    args = parser.parse_args()

    base = os.path.dirname(os.path.abspath(args.job))
    with open(args.job, encoding="utf-8") as f:
        job = json.load(f)
    out_dir = os.path.abspath(args.out) if args.out else base
    os.makedirs(out_dir, exist_ok=True)
    default_threads = int(job.get("num_threads", 1))
    result = open(args.result, "w", encoding="utf-8") if args.result else sys.stdout

    def emit(obj) -> None:
        result.write(json.dumps(obj) + "\n")
        result.flush()

    def resolve(path: str) -> str:
        return path if os.path.isabs(path) else os.path.join(base, path)

    count = 0
    for spec in job["models"]:
        name = spec["name"]
        emit({"started": name})
        runs = {}
        try:
            with open(resolve(spec["path"]), "rb") as f:
                model = f.read()
            inputs = [np.load(resolve(p)) for p in spec.get("inputs", [])]
        except Exception as err:
            for resolver in spec.get("resolvers", ["ref"]):
                runs[resolver] = {"ok": False, "stage": "read", "error": str(err)}
            emit({"name": name, "runs": runs})
            count += 1
            continue
        threads = int(spec.get("num_threads", default_threads))
        for resolver in spec.get("resolvers", ["ref"]):
            if resolver not in RESOLVERS:
                runs[resolver] = {
                    "ok": False,
                    "stage": "load",
                    "error": f"unknown resolver {resolver!r} (ref, builtin, default)",
                }
                continue
            start = time.perf_counter()
            try:
                outputs = run_one(model, inputs, resolver, threads)
            except StageError as err:
                runs[resolver] = {"ok": False, "stage": err.stage, "error": err.error}
                continue
            files = []
            for k, y in enumerate(outputs):
                file = f"{name}.{resolver}.{k}.npy"
                np.save(os.path.join(out_dir, file), y)
                files.append(os.path.join(out_dir, file))
            runs[resolver] = {
                "ok": True,
                "outputs": files,
                "seconds": time.perf_counter() - start,
            }
        emit({"name": name, "runs": runs})
        count += 1
    emit({"done": True, "models": count})
    if result is not sys.stdout:
        result.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
