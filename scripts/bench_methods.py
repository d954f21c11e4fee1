"""Every dropout method against `standard`: training-step time ratio, and full-MNIST accuracy.

python scripts/bench_methods.py speed [--methods a,b] [--steps 200] [--rounds 3] [--set key=value ...]
    LeNet5, MNIST, batch 128, CPU; each method at its default sites and cadence. Step time =
    training time / steps (hooks included, validation excluded), median over rounds run
    round-robin so machine noise hits every method alike; ratio to `standard` at the same
    sites (the method's own sites, so conv-site methods are compared with standard on conv sites).
    `--set dropout.update_every=100` applies an override to every measured method (not to
    `standard`), `--set edropout:dropout.warmup=0` to one method, e.g. to find the cadence of a
    costly method. Run it on a quiet machine with OMP_NUM_THREADS=1 (a second OpenMP thread that
    competes with another process makes steps 10x slower at random). Writes docs/bench_methods_speed.md.

python scripts/bench_methods.py accuracy [--methods a,b] [--epochs 3] [--p P] [--dataset mnist]
    One full run per method at its YAML default p (or --p for all); test accuracy, best
    validation accuracy, realised drop fraction and p_eq (means over all training steps). Writes docs/zoo_<dataset>.md.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch
from benchlib import ROOT, config, run_job, write_table

from dropout_lab.dropout import spec
from dropout_lab.errors import ConfigError

ALL = list(spec.specs())  # every registered method


def run(out: Path, overrides: list[str]) -> dict:
    return run_job(config(out, ["trainer.enable_progress_bar=false", *overrides]))


def resolved_sites(method: str) -> str:
    """The sites a method occupies by default (its spec's default_sites when its node says default)."""
    found = spec.get(method)
    return found.default_sites if found.sites == "default" else found.sites


def speed(methods: list[str], steps: int, rounds: int, extra: list[str], out: Path) -> None:
    sites = {m: resolved_sites(m) for m in methods}
    cases = sorted({("standard", s) for s in sites.values()} | {(m, s) for m, s in sites.items()})
    times: dict[tuple[str, str], list[float]] = {case: [] for case in cases}
    refused: dict[tuple[str, str], str] = {}  # methods that refuse LeNet5's sites (variational): a row saying so
    common = [
        f"trainer.max_steps={steps}",
        "trainer.limit_val_batches=0",
        "trainer.limit_test_batches=1",
        f"dataset.subset={{train: {steps * 128}, val: 128, test: 128}}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for method, site in cases:
                if (method, site) in refused:
                    continue
                own = (
                    []
                    if method == "standard"
                    else [e.split(":", 1)[-1] for e in extra if ":" not in e or e.startswith(f"{method}:")]
                )
                try:
                    summary = run(
                        Path(tmp) / f"{method}-{site}-{r}",
                        [f"dropout={method}", f"dropout.sites={site}", *common, *own],
                    )
                except ConfigError as err:
                    refused[(method, site)] = str(err)
                    continue
                times[(method, site)].append(1000 * summary["train_seconds"] / steps)
            print(f"round {r + 1}/{rounds} done", flush=True)
    rows = ["| method | sites | ms/step | x standard |", "| --- | --- | --- | --- |"]
    for method, site in cases:
        if (method, site) in refused:
            rows.append(f"| {method} | {site} | refused: {refused[(method, site)]} | |")
            continue
        ms, base = statistics.median(times[(method, site)]), statistics.median(times[("standard", site)])
        rows.append(f"| {method} | {site} | {ms:.2f} | {ms / base:.2f} |")
    sets = "".join(f" --set {e}" for e in extra)
    write_table(
        out,
        f"Training-step time, LeNet5, MNIST, batch 128, CPU ({torch.get_num_threads()} thread(s)), {steps} steps x {rounds} rounds (median); "
        f"`python scripts/bench_methods.py speed --steps {steps} --rounds {rounds}{sets}`",
        rows,
    )


def accuracy(methods: list[str], epochs: int, p: float | None, dataset: str, out: Path) -> None:
    rows = [
        "| method | p | test acc % | best val acc % | realised drop fraction | p_eq | s/epoch |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for method in methods:
            rate = [] if p is None else [f"dropout.p={p}"]
            try:
                s = run(
                    Path(tmp) / method,
                    [f"dropout={method}", *rate, f"dataset={dataset}", f"trainer.max_epochs={epochs}"],
                )
            except ConfigError as err:  # a method that refuses LeNet5's sites (variational)
                rows.append(f"| {method} | | refused: {err} | | | | |")
                continue
            frac, p_eq = ("n/a" if s[key] is None else f"{s[key]:.3f}" for key in ("drop_fraction", "p_eq"))
            variants = "".join(
                f" ({k.split('_', 1)[1]} {100 * v:.2f})" for k, v in s["metrics"].items() if k.startswith("test/acc_")
            )
            rows.append(
                f"| {method} | {s['hparams']['p']} | {100 * s['test_acc']:.2f}{variants} | {100 * s['best_val_acc']:.2f} | {frac} | {p_eq} | {s['wall_seconds'] / epochs:.1f} |"
            )
            print(rows[-1], flush=True)
    rate = "" if p is None else f" --p {p}"
    write_table(
        out,
        f"LeNet5 on full {dataset} (54k/6k/10k), Adam 1e-3, batch 128, {epochs} epochs, seed 0, CPU, each method at its "
        f"default sites; `python scripts/bench_methods.py accuracy --epochs {epochs}{rate} --dataset {dataset}`",
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["speed", "accuracy"])
    parser.add_argument("--methods", default=",".join(ALL), help="comma list of conf/dropout keys (default: all)")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--p", type=float, help="drop probability for every method (default: each YAML's p)")
    parser.add_argument(
        "--set", action="append", default=[], help="extra override for the measured methods (speed mode)"
    )
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    methods = args.methods.split(",")
    if args.mode == "speed":
        speed(methods, args.steps, args.rounds, args.set, args.out or ROOT / "docs" / "bench_methods_speed.md")
    else:
        accuracy(methods, args.epochs, args.p, args.dataset, args.out or ROOT / "docs" / f"zoo_{args.dataset}.md")


if __name__ == "__main__":
    main()
