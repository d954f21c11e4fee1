"""Workers that scale: jobs/h of one sweep with 1 and with 2 ``gpu_pool`` workers on the CPU.

    python scripts/bench_workers.py [--jobs 24] [--settings 1x1 2x1 1x2] [--epochs 1] [--subset 0] [--bare]

A setting ``WxT`` runs ``python train.py -m hydra/launcher=gpu_pool hydra.launcher.n_jobs=W threads=T seed=0,...,J-1``
(LeNet5 + standard dropout on MNIST, batch 128, ``--epochs`` epochs; ``--subset N`` caps every split at N samples
for a quick check) in a fresh process and times it from launch to exit, so worker start-up, the per-worker data
read and every job's fixed cost count. ``T`` is the torch threads per job (``threads``; ``WxA`` leaves it to
``launch.torch_threads``, cores // W). Goal: 2 workers >= 1.6x the jobs/h of 1 worker on a 2-core
machine, at equal threads per job (``2x1`` vs ``1x1``); the table also gives ``1x2`` (one worker using both
cores, the default for 1 worker): two threads already speed one job up (its row against ``1x1``), so against
it no compute-bound job can reach 1.6x with 2 cores. ``--bare`` first measures that ceiling without the
harness: training samples/s of the bare loop (``benchlib.bare_loop``, LeNet5 + standard, batch 128, 150
batches) in 1 process with 1 and with 2 threads and in 2 processes at once with 1 thread each.
Writes docs/bench_workers.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchlib import ROOT, machine, write_section


def sweep(workers: int, jobs: int, overrides: list[str], sweep_dir: Path, env: dict | None = None) -> float:
    """Run ``jobs`` jobs (seeds 0..jobs-1) through ``gpu_pool`` with ``workers`` workers; return jobs per hour.
    ``overrides`` may set ``threads`` (torch threads per job).

    Raises:
        RuntimeError: if the sweep fails or a job's metrics.json does not say ``status: ok``.
    """
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "hydra/launcher=gpu_pool",
        f"hydra.launcher.n_jobs={workers}",
        f"hydra.sweep.dir={sweep_dir}",
        "trainer.enable_progress_bar=false",
        f"seed={','.join(map(str, range(jobs)))}",
        *overrides,
    ]
    start = time.perf_counter()
    proc = subprocess.run(
        cmd,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT / "src"),
            "DROPOUT_LAB_LOCK_DIR": str(sweep_dir.parent),
            **(env or {}),
        },
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    summaries = [json.loads(p.read_text()) for p in sweep_dir.glob("*/metrics.json")]
    if proc.returncode or len(summaries) != jobs or any(s["status"] != "ok" for s in summaries):
        raise RuntimeError(
            f"sweep with {workers} workers failed (rc {proc.returncode}, {len(summaries)} summaries):\n{proc.stderr[-3000:]}"
        )
    return jobs * 3600 / seconds


def job_overrides(epochs: int, subset: int) -> list[str]:
    """The flagship-shaped job: LeNet5 + standard dropout, MNIST, ``epochs`` epochs, optional subset."""
    out = ["model=lenet5", "dropout=standard", "dataset=mnist", f"trainer.max_epochs={epochs}"]
    return out + ([f"dataset.subset={subset}"] if subset else [])


def bare_rate(threads: int) -> None:
    """Child of ``--bare``: print the bare loop's training samples/s with ``threads`` torch threads (JSON)."""
    import torch
    from benchlib import bare_loop, config

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(Path(tmp), ["model=lenet5", "dropout=standard", "dataset=mnist", "dataset.batch_size=128"])
        rate, _ = bare_loop(cfg, epochs=1, max_batches=150)
    print(json.dumps({"samples_per_s": rate}))


def bare_ceiling() -> list[str]:
    """Rows: the bare loop's samples/s in 1 process x 1 thread, 1 x 2 threads and 2 processes x 1 thread at once."""

    def run(processes: int, threads: int) -> float:
        cmd = [sys.executable, __file__, "--bare-child", str(threads)]
        env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
        outs = [proc.communicate()[0] for proc in procs]
        if any(proc.returncode for proc in procs):
            raise RuntimeError(f"bare loop child failed: {outs}")
        return sum(json.loads(out.strip().splitlines()[-1])["samples_per_s"] for out in outs)

    rates = {(1, 1): run(1, 1), (1, 2): run(1, 2), (2, 1): run(2, 1)}
    rows = ["| processes x threads | training samples/s (all processes) | vs 1x1 |", "| --- | --- | --- |"]
    return rows + [f"| {n}x{t} | {r:.0f} | {r / rates[1, 1]:.2f}x |" for (n, t), r in rates.items()]


def setting(text: str) -> tuple[int, str]:
    """``"2x1"`` -> (2 workers, ``threads=1``); ``"1xA"`` -> (1, auto: cores // workers)."""
    workers, threads = text.lower().split("x")
    return int(workers), threads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=24)
    parser.add_argument(
        "--settings", nargs="+", default=["1x1", "2x1", "1x2"], help="WxT: W workers, T torch threads per job (A: auto)"
    )
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--subset", type=int, default=0, help="cap each split at N samples (0: full MNIST)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_workers.md")
    parser.add_argument("--bare", action="store_true", help="first measure the bare loop's 2-core ceiling")
    parser.add_argument("--bare-child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_child:
        return bare_rate(args.bare_child)
    command = (
        f"python scripts/bench_workers.py{' --bare' if args.bare else ''} --jobs {args.jobs} --settings {' '.join(args.settings)} --epochs {args.epochs}"
        + (f" --subset {args.subset}" if args.subset else "")
    )
    if args.bare:
        write_section(
            args.out,
            "Ceiling: the bare loop on 2 cores",
            f"benchlib.bare_loop, LeNet5 + standard dropout, MNIST, batch 128, "
            f"150 batches per process; {machine()}; `{command}`",
            bare_ceiling(),
        )
    rates = {}
    with tempfile.TemporaryDirectory() as tmp:
        for text in args.settings:
            workers, threads = setting(text)
            extra = [] if threads == "a" else [f"threads={threads}"]
            rates[text] = sweep(workers, args.jobs, job_overrides(args.epochs, args.subset) + extra, Path(tmp) / text)
            print(f"{text}: {rates[text]:.0f} jobs/h", flush=True)
    base = rates[args.settings[0]]
    rows = [
        f"| workers x threads per job | jobs/h | vs {args.settings[0]} (goal: 2x1 >= 1.6x 1x1) |",
        "| --- | --- | --- |",
    ]
    rows += [f"| {text} | {r:.0f} | {r / base:.2f}x |" for text, r in rates.items()]
    write_section(
        args.out,
        f"{args.jobs} jobs, {args.epochs} epoch(s), subset {args.subset or 'none'}, settings {' '.join(args.settings)}",
        f"LeNet5 + standard dropout, MNIST, batch 128, hydra/launcher=gpu_pool, one fresh sweep per setting, timed from "
        f"launch to exit; {machine()}; `{command}`",
        rows,
    )


if __name__ == "__main__":
    main()
