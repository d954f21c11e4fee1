"""Per-step training time of the score-driven methods relative to ``standard`` at the same sites.

LeNet5, batch 128 of MNIST-shaped inputs, Adam, CPU, one thread. Each step runs what the trainer
runs for a method: ``on_train_batch_start`` (OBD's Hessian pass), forward, cross-entropy, backward
(gradient-capture hooks), optimizer step. Methods are timed in interleaved rounds (each round times
``--steps`` steps of every method) so machine load affects all alike; the table reports the median
per-step time and its ratio to ``standard``. Writes the table to ``--out``.

Usage: flock /tmp/dropout-lab-cpu.lock python scripts/bench_scored.py [--rounds 5] [--steps 20]
       [--override obd:update_every=20 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dropout_lab.dropout.base import DropoutContext, overrides
from dropout_lab.dropout.sites import attach
from dropout_lab.models.lenet import LeNet5

CONF = Path(__file__).resolve().parents[1] / "conf"
KEYS = ["standard", "grad_dynamic", "l2_dynamic", "taylor", "obd", "fmre"]


def build(key: str, extra: list[str], sites: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"dropout={key}", f"dropout.sites={sites}", *extra])
    torch.manual_seed(0)
    model = LeNet5()
    methods = attach(model, cfg.dropout)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    starters = [m for m in methods if overrides(m, "on_train_batch_start")]
    return model, opt, starters, OmegaConf.to_container(cfg.dropout)


def run(model, opt, starters, x, y, steps: int, offset: int) -> float:
    model.train()
    t0 = time.perf_counter()
    for i in range(steps):
        ctx = DropoutContext(global_step=offset + i, epoch=0, max_steps=10**6, dataset_size=54000, module=SimpleNamespace(model=model), batch=(x, y))
        for m in starters:
            m.on_train_batch_start(ctx)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--sites", default="fc")
    parser.add_argument("--override", action="append", default=[], help="key:dotted=value, e.g. obd:update_every=20")
    parser.add_argument("--out", default="outputs/bench_scored.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    extra = {k: [] for k in KEYS}
    for item in args.override:
        key, kv = item.split(":", 1)
        extra[key].append(f"dropout.{kv}")
    runs = {k: build(k, extra[k], args.sites) for k in KEYS}
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(128, 1, 28, 28, generator=g), torch.randint(0, 10, (128,), generator=g)
    times = {k: [] for k in KEYS}
    for k in KEYS:  # warm-up
        run(*runs[k][:3], x, y, 3, 0)
    for r in range(args.rounds):
        for k in KEYS:
            times[k].append(run(*runs[k][:3], x, y, args.steps, (r + 1) * args.steps))
    base = statistics.median(times["standard"])
    lines = [f"LeNet5, batch 128, CPU 1 thread, sites={args.sites}, {args.rounds} rounds x {args.steps} steps, median", "",
             "| method | cadence | ms/step | x standard |", "| --- | --- | --- | --- |"]
    for k in KEYS:
        cfg = runs[k][3]
        cadence = f"update_every={cfg['update_every']}" + (f", probes={cfg['probes']}" if "probes" in cfg else "") if "update_every" in cfg else "-"
        med = statistics.median(times[k])
        lines.append(f"| {k} | {cadence} | {1e3 * med:.2f} | {med / base:.2f} |")
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
