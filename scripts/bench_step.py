"""Counts per training step, harness vs bare loop: ATen ops, host syncs and Python calls (not times, so the
numbers hold on a busy machine).

    python scripts/bench_step.py [--model lenet5] [--batch-size 128] [--dropout standard] [--override key=value ...] [--top 12]

Each side runs a short and a long training job (``trainer.max_steps`` = 10 and 40, no validation); the
difference divided by the 30 extra steps is the per-step count, so start-up and the test epoch cancel out.
ATen ops are ``torch.profiler`` CPU events named ``aten::*`` (nested ones included, on both sides alike);
host syncs are ``aten::_local_scalar_dense`` events (``.item()``, ``bool(tensor)``: what blocks on a GPU);
Python calls are ``sys.setprofile`` "call" events. Writes docs/bench_step.md (appends one section per model).
"""

from __future__ import annotations

import argparse
import collections
import itertools
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from benchlib import ROOT, bare_loop, config, machine, python_calls, write_section

from dropout_lab.config import attach, instantiate_model
from dropout_lab.train import train

SHORT, LONG = 10, 40
SYNC = "aten::_local_scalar_dense"


def recording_ops(cfg) -> float:
    """ATen ops per training forward that the dropout methods spend beyond ``F.dropout`` at their sites
    (recording the drop fraction, the method wrapper), summed over sites; inputs captured from a real batch."""
    from dropout_lab.dropout.base import DropoutMethod

    model = instantiate_model(cfg)
    attach(model, cfg.dropout)
    sites = [m for m in model.modules() if isinstance(m, DropoutMethod)]
    inputs = {}
    hooks = [m.register_forward_pre_hook(lambda mod, args: inputs.setdefault(mod, args[0].detach())) for m in sites]
    model.train()(
        torch.randn(cfg.dataset.batch_size, cfg.dataset.in_channels, cfg.dataset.image_size, cfg.dataset.image_size)
    )
    for hook in hooks:
        hook.remove()

    def ops(run) -> int:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            run()
        return sum(e.name.startswith("aten::") for e in prof.events())

    return sum(ops(lambda: m(x)) - ops(lambda: F.dropout(x, float(m.p), training=True)) for m, x in inputs.items())


def counted(run) -> tuple[collections.Counter, int]:
    """(ATen op counts by name, Python calls in every thread: the progress bar renders in its own) of ``run()``."""
    calls = python_calls(run, all_threads=True)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        run()
    ops = collections.Counter(e.name for e in prof.events() if e.name.startswith("aten::"))
    return ops, calls


def per_step(side: str, overrides: list[str], tmp: Path) -> tuple[collections.Counter, float]:
    """Per-step counts of ``side``: ``bare``, ``bare_fused`` or ``harness``."""
    folders = itertools.count()

    def job(steps: int):
        def run():  # a fresh job folder per run: train() refuses to overwrite a finished job
            cfg = config(
                tmp / f"{side}{steps}-{next(folders)}",
                [
                    *overrides,
                    f"trainer.max_steps={steps}",
                    "trainer.limit_val_batches=0",
                    "trainer.limit_test_batches=1",
                    "trainer.enable_progress_bar=true",
                ],
            )
            train(cfg) if side == "harness" else bare_loop(cfg, 1, fused=side == "bare_fused", max_batches=steps)

        return run

    job(SHORT)()  # warm-up: imports, the data cache, lazy initialisation
    (short, calls_short), (long, calls_long) = counted(job(SHORT)), counted(job(LONG))
    diff = collections.Counter({k: (long[k] - short[k]) / (LONG - SHORT) for k in long | short})
    return diff, (calls_long - calls_short) / (LONG - SHORT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--dropout", default="standard")
    parser.add_argument(
        "--override", nargs="*", default=[], help="more config overrides, e.g. model.hidden_sizes=[100,100]"
    )
    parser.add_argument("--top", type=int, default=12, help="list the ATen ops with the largest harness excess")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_step.md")
    args = parser.parse_args()
    torch.set_num_threads(1)
    overrides = [
        f"model={args.model}",
        f"dataset.batch_size={args.batch_size}",
        f"dropout={args.dropout}",
        *args.override,
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ops_plain, calls_plain = per_step("bare", overrides, Path(tmp))
        ops_bare, calls_bare = per_step("bare_fused", overrides, Path(tmp))
        ops_ours, calls_ours = per_step("harness", overrides, Path(tmp))
    total_plain, total_bare, total_ours = (sum(ops.values()) for ops in (ops_plain, ops_bare, ops_ours))
    rows = [
        "| per training step | bare loop, `Adam(params, lr)` | bare loop, fused Adam | harness (fused Adam) | harness / bare fused |",
        "| --- | --- | --- | --- | --- |",
        f"| ATen ops (goal: harness <= 1.1x bare) | {total_plain:.1f} | {total_bare:.1f} | {total_ours:.1f} | {total_ours / total_bare:.3f} |",
        f"| host syncs (`{SYNC}`) | {ops_plain[SYNC]:.1f} | {ops_bare[SYNC]:.1f} | {ops_ours[SYNC]:.1f} | |",
        f"| host syncs the harness adds to the same loop (goal 0; CPU fused Adam reads its step counters on the host) | | | "
        f"{ops_ours[SYNC] - ops_bare[SYNC]:.1f} | |",
        f"| Python calls (all threads) | {calls_plain:.0f} | {calls_bare:.0f} | {calls_ours:.0f} | {calls_ours / max(calls_bare, 1):.1f} |",
    ]
    recording = recording_ops(config(Path("."), overrides))
    rows.append(
        f"| dropout methods' ATen ops beyond `F.dropout` at their sites (drop-fraction recording, forward) | "
        f"{recording} | {recording} | {recording} | {100 * recording / total_ours:.1f} % of the harness's |"
    )
    excess = sorted(ops_ours | ops_bare, key=lambda k: ops_bare[k] - ops_ours[k])[: args.top]
    rows += ["", "| ATen op | bare fused / step | harness / step |", "| --- | --- | --- |"]
    rows += [f"| `{k}` | {ops_bare[k]:.1f} | {ops_ours[k]:.1f} |" for k in excess if ops_ours[k] != ops_bare[k]]
    command = (
        f"python scripts/bench_step.py --model {args.model} --batch-size {args.batch_size} --dropout {args.dropout}"
        + (f" --override {' '.join(args.override)}" if args.override else "")
    )
    write_section(
        args.out,
        f"{args.model}{' ' + ' '.join(args.override) if args.override else ''}, batch {args.batch_size}, dropout={args.dropout}",
        f"`{command}`; CPU, 1 thread, {machine()}; per-step = (count at {LONG} steps - count at {SHORT}) / {LONG - SHORT}",
        rows,
    )


if __name__ == "__main__":
    main()
