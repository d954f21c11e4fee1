"""Per-step training time of EDropout relative to standard dropout (LeNet5, MNIST, batch 128, CPU).

A plain PyTorch loop (forward, cross-entropy, backward, Adam step, plus the method's
``on_train_batch_start`` hook, as the Lightning controller calls it) on real MNIST batches; Lightning's
own per-step overhead is the same for every method and left out, so the factors are upper bounds of
what a harness run shows. EDropout is timed before convergence (``threshold`` set out of reach), at
several ``update_every`` cadences. Configurations are interleaved over ``--rounds`` rounds in one
process and the median per-step time of the rounds is reported.

Usage (from the repo root; take the shared CPU lock):
    flock /tmp/dropout-lab-cpu.lock env PYTHONPATH=src DROPOUT_LAB_DATA=/work/shared/data \\
        python scripts/bench_edropout.py [--steps 48] [--rounds 3] [--out outputs/bench/edropout.md]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from dropout_lab.data import MNISTDataModule
from dropout_lab.dropout.base import DropoutContext, overrides
from dropout_lab.dropout.sites import attach
from dropout_lab.models.lenet import LeNet5

STANDARD = {"_target_": "dropout_lab.dropout.standard.StandardDropout", "_partial_": True, "name": "standard", "p": 0.5, "sites": "fc"}
EDROPOUT = {"_target_": "dropout_lab.dropout.edropout.EDropout", "_partial_": True, "name": "edropout", "p": 0.5, "sites": "default",
            "threshold": 10**9}


def make_run(cfg: dict, batches: list):
    """A closure running ``len(batches)`` training steps of LeNet5 with the method of ``cfg``; returns seconds."""
    torch.manual_seed(0)
    model = LeNet5().train()
    methods = attach(model, cfg)
    hooked = [m for m in methods if overrides(m, "on_train_batch_start")]
    optimizer = torch.optim.Adam(model.parameters(), 1e-3)
    module = SimpleNamespace(model=model)
    step = 0

    def run() -> float:
        nonlocal step
        start = time.perf_counter()
        for x, y in batches:
            ctx = DropoutContext(global_step=step, epoch=0, max_steps=10**6, dataset_size=54000, module=module, batch=(x, y))
            for m in hooked:
                m.on_train_batch_start(ctx)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
        return time.perf_counter() - start

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=48, help="steps per round (a multiple of every cadence)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cadences", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--out", type=Path, default=Path("outputs/bench/edropout.md"))
    args = parser.parse_args()
    dm = MNISTDataModule(name="mnist", torchvision_class="MNIST", root=os.environ.get("DROPOUT_LAB_DATA", "data"), num_classes=10,
                         in_channels=1, image_size=28, mean=[0.1307], std=[0.3081], batch_size=128, subset={"train": 128 * args.steps, "val": 128, "test": 128})
    dm.setup("fit")
    batches = [(x, y) for x, y in dm.train_dataloader()][: args.steps]
    runs = {"standard (p=0.5, fc)": make_run(STANDARD, batches)}
    runs |= {f"edropout update_every={n}": make_run(EDROPOUT | {"update_every": n}, batches) for n in args.cadences}
    for run in runs.values():  # warm-up
        run()
    times = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            times[name].append(run() / len(batches))
    base = statistics.median(times["standard (p=0.5, fc)"])
    lines = [f"LeNet5, MNIST, batch 128, CPU ({torch.get_num_threads()} threads), {len(batches)} steps x {args.rounds} rounds, median",
             "", "| config | ms/step | x standard |", "| --- | --- | --- |"]
    for name, ts in times.items():
        t = statistics.median(ts)
        lines.append(f"| {name} | {1000 * t:.1f} | {t / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
