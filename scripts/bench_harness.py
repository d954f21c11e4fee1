"""Harness vs bare PyTorch loop over the same in-memory tensors, same model, split and optimizer.

    python scripts/bench_harness.py speed [--rounds 3]
        LeNet5 + standard dropout on MNIST, one epoch each: samples/s of both and their ratio
        (rounds alternate bare/harness in one process so machine noise hits both alike; median of
        the per-round ratios), and the time from `python train.py` to the first training step.
        Writes docs/bench_harness.md.

    python scripts/bench_harness.py accuracy --dataset mnist --epochs 3 [--model lenet5]
        Test accuracy of the harness and of the bare loop after the same epochs.
        Appends a row to docs/harness_accuracy.md.
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
from dropout_lab.config import attach
from dropout_lab.train import train

ROOT = Path(__file__).resolve().parents[1]


def config(out: Path, extra: list[str]):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"output_dir={out}", "trainer.accelerator=cpu", *extra])


def bare_loop(cfg, epochs: int) -> tuple[float, float]:
    """The plainest training loop over the datamodule's tensors; returns (train samples/s, test accuracy)."""
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.dataset)
    dm.setup("fit")
    model = instantiate(cfg.model)
    attach(model, cfg.dropout)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.optimizer.lr)
    x, y = dm.splits["train"]
    model.train()
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in TensorBatches(x, y, cfg.dataset.batch_size, shuffle=True):
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    speed = epochs * len(x) / (time.perf_counter() - start)
    model.eval()
    x_test, y_test = dm.splits["test"]
    with torch.no_grad():
        correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in TensorBatches(x_test, y_test, 1000, shuffle=False))
    return speed, correct / len(y_test)


def harness(cfg) -> dict:
    """Train through dropout_lab.train (Lightning) and return the run summary."""
    train(cfg)
    return json.loads((Path(cfg.output_dir) / "metrics.json").read_text())


def first_step_latency(tmp: Path) -> float:
    """Seconds from launching `python train.py` to its first training step (imports, data, model)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    start = time.time()
    subprocess.run([sys.executable, str(ROOT / "train.py"), "trainer.max_steps=1", "trainer.limit_val_batches=0",
                    "trainer.limit_test_batches=1", "trainer.enable_progress_bar=false", f"hydra.run.dir={tmp}"],
                   env=env, check=True, capture_output=True)
    return json.loads((tmp / "metrics.json").read_text())["first_step_time"] - start


def speed(rounds: int, out: Path) -> None:
    bare, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(rounds):
            bare.append(bare_loop(config(Path(tmp) / f"bare{i}", ["trainer.max_epochs=1"]), epochs=1)[0])
            ours.append(harness(config(Path(tmp) / f"harness{i}", ["trainer.max_epochs=1"]))["train_samples_per_s"])
            print(f"round {i}: bare {bare[-1]:.0f} samples/s, harness {ours[-1]:.0f} samples/s", flush=True)
        latency = first_step_latency(Path(tmp) / "latency")
    ratios = [h / b for h, b in zip(ours, bare)]
    rows = [
        "| measure | value |",
        "| --- | --- |",
        f"| bare PyTorch loop, samples/s (median of {rounds}) | {statistics.median(bare):.0f} |",
        f"| harness (Lightning, progress bar, metrics, dropout controller), samples/s | {statistics.median(ours):.0f} |",
        f"| harness / bare (median of per-round ratios; target >= 0.85) | {statistics.median(ratios):.3f} |",
        f"| `python train.py` to first training step, s | {latency:.1f} |",
    ]
    header = (f"LeNet5 + standard dropout (p=0.5, fc sites), MNIST 54k train, batch 128, Adam, CPU threads={torch.get_num_threads()}; "
              f"`python scripts/bench_harness.py speed --rounds {rounds}`")
    write(out, header, rows, append=False)


def accuracy(dataset: str, model: str, epochs: int, out: Path) -> None:
    extra = [f"dataset={dataset}", f"model={model}", f"trainer.max_epochs={epochs}", "trainer.enable_progress_bar=false"]
    with tempfile.TemporaryDirectory() as tmp:
        ours = harness(config(Path(tmp) / "harness", extra))
        _, bare = bare_loop(config(Path(tmp) / "bare", extra), epochs)
    row = (f"| {model} | {dataset} | {epochs} | {100 * ours['test_acc']:.2f} | {100 * bare:.2f} | "
           f"{100 * (ours['test_acc'] - bare):+.2f} | `python scripts/bench_harness.py accuracy --dataset {dataset} --model {model} --epochs {epochs}` |")
    header_rows = ["| model | dataset | epochs | harness test acc % | bare loop test acc % | difference | command |", "| --- | --- | --- | --- | --- | --- | --- |"]
    write(out, "Standard dropout p=0.5 on the fc sites, Adam 1e-3, batch 128, seed 0, 54k/6k/10k split, CPU", header_rows + [row], append=True)


def write(out: Path, header: str, rows: list[str], append: bool) -> None:
    print("\n".join(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    if append and out.exists():
        out.write_text(out.read_text() + rows[-1] + "\n")
    else:
        out.write_text(header + "\n\n" + "\n".join(rows) + "\n")
    print(f"wrote {out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["speed", "accuracy"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    if args.mode == "speed":
        speed(args.rounds, args.out or ROOT / "docs" / "bench_harness.md")
    else:
        accuracy(args.dataset, args.model, args.epochs, args.out or ROOT / "docs" / "harness_accuracy.md")


if __name__ == "__main__":
    main()
