#!/usr/bin/env python3
"""One quantization-aware training step of the MNIST CNN at batch 64 in
PyTorch eager mode, for comparison with ``cargo bench -p quant-train --bench
qat_step`` (the same network, optimizer and batch in quant).

The network mirrors quant's built-in ``mnist-cnn``: conv 5x5x16 (SAME) +
batch norm + activation, max pool 2, conv 5x5x32 + batch norm + activation,
max pool 2, dense 1568->10, sparse softmax cross-entropy, Adam (lr 1e-3).
PyTorch's QAT recipe: conv-BN-ReLU fused with ``fuse_modules_qat`` (PyTorch
fuses ReLU, not ReLU6, so the activation is ReLU here), the ``fbgemm`` QAT
qconfig (per-channel symmetric fake-quant weights, per-tensor activations
with moving-average observers), ``prepare_qat``. The data is a fixed random
batch, as in the Rust benchmark.

Runs on 2 threads (``torch.set_num_threads``). Prints one JSON object:
``{"torch": {"qat_step_ms": median, "images_per_sec": ...}}`` or
``{"torch": {"skipped": "..."}}``.

Usage::

    target/torch-venv/bin/python tools/bench/train_peers.py [--runs 30]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    try:
        import torch
        import torch.ao.quantization as tq
        from torch import nn
    except ImportError as err:
        print(json.dumps({"torch": {"skipped": f"torch does not import: {err}"}}))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.quant = tq.QuantStub()
            self.conv1 = nn.Conv2d(1, 16, 5, padding=2, bias=False)
            self.bn1 = nn.BatchNorm2d(16)
            self.relu1 = nn.ReLU()
            self.pool1 = nn.MaxPool2d(2)
            self.conv2 = nn.Conv2d(16, 32, 5, padding=2, bias=False)
            self.bn2 = nn.BatchNorm2d(32)
            self.relu2 = nn.ReLU()
            self.pool2 = nn.MaxPool2d(2)
            self.fc = nn.Linear(7 * 7 * 32, 10)
            self.dequant = tq.DeQuantStub()

        def forward(self, x):
            x = self.quant(x)
            x = self.pool1(self.relu1(self.bn1(self.conv1(x))))
            x = self.pool2(self.relu2(self.bn2(self.conv2(x))))
            x = self.fc(torch.flatten(x, 1))
            return self.dequant(x)

    model = Net().train()
    model = tq.fuse_modules_qat(
        model, [["conv1", "bn1", "relu1"], ["conv2", "bn2", "relu2"]]
    )
    model.qconfig = tq.get_default_qat_qconfig("fbgemm")
    tq.prepare_qat(model, inplace=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()
    x = torch.rand(args.batch, 1, 28, 28)
    y = torch.randint(0, 10, (args.batch,))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.runs):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    ms = statistics.median(times) * 1e3
    print(
        json.dumps(
            {"torch": {"qat_step_ms": ms, "images_per_sec": args.batch / (ms / 1e3)}}
        )
    )


if __name__ == "__main__":
    main()
