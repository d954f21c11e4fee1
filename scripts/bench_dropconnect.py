"""DropConnect's cost against `standard`: ms per training step and peak memory, per-example masks
(the default, Wan et al. 2013) and per-mini-batch masks.

    OMP_NUM_THREADS=1 python scripts/bench_dropconnect.py [--steps 20] [--rounds 5] [--batch 128]

Cases: LeNet5 (28 px, fc sites: DropConnect masks fc2's 120 x 84 weights per example, one chunk at
the default budget) and the MLP 784-800-800-10 (DropConnect masks the hidden 800 x 800 layer:
82 M mask entries per batch of 128, so it runs in chunks of 26 examples recomputed in backward;
"unchunked" raises ``max_mask_elements`` to 2^27 to show what the chunking saves and costs).
A forward + backward + SGD step on random inputs (the data pipeline is the same for every method).
Time: median ms/step over ``rounds`` rounds run round-robin in one process, so machine noise hits
every case alike; read the ratio to `standard`. Memory: peak resident set size of a fresh
subprocess per case during 3 steps (VmHWM after a reset) minus its size before them, MiB (Linux). Writes
docs/bench_dropconnect.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from benchlib import ROOT, config

from dropout_lab.config import attach, instantiate_model

CASES = {
    "lenet5 standard": ["model=lenet5", "dropout=standard"],
    "lenet5 dropconnect per-batch": ["model=lenet5", "dropout=dropconnect", "dropout.per_sample=false"],
    "lenet5 dropconnect per-example": ["model=lenet5", "dropout=dropconnect"],
    "mlp standard": ["model=mlp", "dropout=standard"],
    "mlp dropconnect per-batch": ["model=mlp", "dropout=dropconnect", "dropout.per_sample=false"],
    "mlp dropconnect per-example": ["model=mlp", "dropout=dropconnect"],
    "mlp dropconnect per-example unchunked": [
        "model=mlp",
        "dropout=dropconnect",
        "dropout.max_mask_elements=134217728",
    ],
}


def build(overrides: list[str]):
    cfg = config(Path("/tmp"), overrides)
    torch.manual_seed(0)
    model = instantiate_model(cfg)
    attach(model, cfg.dropout)
    return model.train(), torch.optim.SGD(model.parameters(), lr=0.01)


def step(model, optimizer, x, y) -> None:
    optimizer.zero_grad()
    F.cross_entropy(model(x), y).backward()
    optimizer.step()


def batch(size: int):
    return torch.randn(size, 1, 28, 28), torch.randint(0, 10, (size,))


def status_kib(field: str) -> int:
    """A ``/proc/self/status`` field in KiB (Linux): VmRSS (resident now) or VmHWM (peak)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith(field))
    return int(line.split()[1])


def memory(case: str, size: int, steps: int) -> float:
    """Peak RSS growth (MiB) during ``steps`` steps after one warm-up step, in this (fresh) process:
    the peak is reset (``/proc/self/clear_refs``) once the model, optimizer state and batch exist."""
    model, optimizer = build(CASES[case])
    x, y = batch(size)
    step(model, optimizer, x, y)
    Path("/proc/self/clear_refs").write_text("5")
    before = status_kib("VmRSS")
    for _ in range(steps):
        step(model, optimizer, x, y)
    return (status_kib("VmHWM") - before) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_of:
        print(json.dumps(memory(args.memory_of, args.batch, 3)))
        return
    built = {case: build(overrides) for case, overrides in CASES.items()}
    x, y = batch(args.batch)
    times: dict[str, list[float]] = {case: [] for case in CASES}
    for _ in range(args.rounds):
        for case, (model, optimizer) in built.items():
            step(model, optimizer, x, y)  # warm-up
            start = time.perf_counter()
            for _ in range(args.steps):
                step(model, optimizer, x, y)
            times[case].append((time.perf_counter() - start) / args.steps * 1000)
    rss = {
        case: json.loads(
            subprocess.run(
                [sys.executable, __file__, "--batch", str(args.batch), "--memory-of", case],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for case in CASES
    }
    command = f"OMP_NUM_THREADS={torch.get_num_threads()} python scripts/bench_dropconnect.py --steps {args.steps} --rounds {args.rounds} --batch {args.batch}"
    rows = ["| case | ms/step | x standard | peak RSS growth (MiB) |", "| --- | --- | --- | --- |"]
    for case in CASES:
        ms = statistics.median(times[case])
        base = statistics.median(times[case.split()[0] + " standard"])
        rows.append(f"| {case} | {ms:.2f} | {ms / base:.2f} | {rss[case]:.0f} |")
    table = "\n".join(
        [
            f"DropConnect vs `standard`, batch {args.batch}, CPU ({torch.get_num_threads()} thread), "
            f"median of {args.rounds} round-robin rounds x {args.steps} steps; `{command}`",
            "",
            *rows,
            "",
        ]
    )
    print(table)
    (ROOT / "docs" / "bench_dropconnect.md").write_text(table)


if __name__ == "__main__":
    main()
