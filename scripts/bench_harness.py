"""Harness vs bare PyTorch loop: LeNet5 + standard dropout on MNIST, one epoch each, same tensors.

Prints a table (samples/s of each, their ratio; time from `python train.py` to the first training
step) and writes it to docs/bench_harness.md. Rounds alternate bare/harness in one process so that
machine noise hits both alike; the ratio is the median over rounds.

    python scripts/bench_harness.py [--rounds 3] [--out docs/bench_harness.md]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dropout_lab.data import TensorBatches
from dropout_lab.dropout import attach
from dropout_lab.train import train

ROOT = Path(__file__).resolve().parents[1]


def config(out: Path, extra: list[str] = ()):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"output_dir={out}", "trainer.max_epochs=1",
                                            "trainer.accelerator=cpu", *extra])


def bare_epoch(cfg) -> float:
    """One epoch of the plainest loop over the same in-memory tensors; returns samples/s."""
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.dataset)
    dm.setup("fit")
    model = instantiate(cfg.model)
    attach(model, cfg.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    x, y = dm.splits["train"]
    start = time.perf_counter()
    for xb, yb in TensorBatches(x, y, cfg.dataset.batch_size, shuffle=True):
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return len(x) / (time.perf_counter() - start)


def harness_epoch(cfg) -> float:
    """One epoch through dropout_lab.train (Lightning); samples/s over the training batches only."""
    train(cfg)
    return json.loads((Path(cfg.output_dir) / "metrics.json").read_text())["train_samples_per_s"]


def first_step_latency(tmp: Path) -> float:
    """Seconds from launching `python train.py` to its first training step (imports, data, model)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.time()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "trainer.max_steps=1", "trainer.limit_val_batches=0",
                    "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp}"],
                   env=env, check=True, capture_output=True)
    return json.loads((tmp / "metrics.json").read_text())["first_step_time"] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_harness.md")
    args = parser.parse_args()
    bare, harness = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            bare.append(bare_epoch(config(Path(tmp) / f"bare{i}")))
            harness.append(harness_epoch(config(Path(tmp) / f"harness{i}")))
            print(f"round {i}: bare {bare[-1]:.0f} samples/s, harness {harness[-1]:.0f} samples/s", flush=True)
        latency = first_step_latency(Path(tmp) / "latency")
    ratios = [h / b for h, b in zip(harness, bare)]
    rows = [
        "| measure | value |",
        "| --- | --- |",
        f"| bare PyTorch loop, samples/s (median of {args.rounds}) | {statistics.median(bare):.0f} |",
        f"| harness (Lightning + dropout controller + metrics), samples/s | {statistics.median(harness):.0f} |",
        f"| harness / bare (median of per-round ratios; target >= 0.85) | {statistics.median(ratios):.3f} |",
        f"| `python train.py` to first training step, s | {latency:.1f} |",
    ]
    table = "\n".join(rows)
    header = (f"LeNet5 + standard dropout (p=0.5, fc sites), MNIST 54k train, batch 128, Adam, CPU threads={torch.get_num_threads()}; "
              f"`python scripts/bench_harness.py --rounds {args.rounds}`\n\n")
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(header + table + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
