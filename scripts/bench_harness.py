"""Harness vs bare PyTorch loop over the same in-memory tensors, same model, split and optimizer.

    python scripts/bench_harness.py speed [--rounds 3] [--batches 200]
        Training samples/s, harness vs bare loop, at LeNet5 MNIST batch 128 and at source 003's MLP 2x100
        batch 32 (rounds alternate bare/harness in one process so machine noise hits both alike; median of
        the per-round ratios). The bare loop uses ``torch.optim.Adam(params, lr)`` as a user writes it
        and, second reference, the harness's fused kernel. Section "speed" of docs/bench_harness.md.

    python scripts/bench_harness.py e2e [--rounds 2] [--epochs 1]
        One whole job in-process (``train(cfg)``: data, model, trainer, logger, train/val/test epochs,
        checkpoint, summary) vs a bare script doing the same epochs and both tests (last and best weights), and the fixed cost per job (a job of
        1 training, 1 validation and 1 test batch: everything outside the loops) as a share of a 3-epoch
        LeNet5 MNIST job, for the first job in a process and for later ones (the data cache).
        Section "end to end" of docs/bench_harness.md.

    python scripts/bench_harness.py flagship [--rounds 3] [--epochs 40]
        One flagship-shaped job (LeNet5, standard p=0.5, 1,000 training and 1,000 validation images, the
        10k test set, batch 64, 40 epochs: the comparison's own regime, conf/experiment/dropout_zoo.yaml)
        in-process through ``train(cfg)`` against the bare loop doing the same training, per-epoch
        validation and the two test passes (last and best-validation weights): the bare loop as an independent
        script in its own process (``bare-worker``, glibc's malloc defaults) and in the harness's process
        (after ``train()`` made glibc keep freed memory: like for like), and the same work under Lightning's own
        ``Trainer(barebones=True)`` with a three-step module (``benchlib.lightning_floor``: the floor of any harness
        on Lightning's Trainer), rounds alternating (the order reversed every other round: the one run last in a
        round ran slower), one thread, with each job's minor page faults. Section "flagship regime" of
        docs/bench_harness.md (goal: bare loop in the harness's process / harness >= 0.95, as the goal was set).

    python scripts/bench_harness.py flagship-calls
        Python calls per epoch of that flagship job for the bare loop, the Lightning floor and the harness (a
        10-epoch job's minus a 5-epoch job's, / 5): counts noise cannot move. Section "flagship regime: Python
        calls per epoch" of docs/bench_harness.md.

    python scripts/bench_harness.py accuracy --dataset mnist --epochs 3 [--model lenet5]
        Test accuracy of the harness and of the bare loop (same fused optimizer) after the same epochs.
        Appends a row to docs/harness_accuracy.md.

Timings on a shared machine are noisy: compare the ratios, which alternate rounds in one process.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from benchlib import (
    ROOT,
    bare_loop,
    config,
    in_turn,
    lightning_floor,
    machine,
    median_ratio,
    python_calls,
    run_job,
    timed,
    write_section,
    write_table,
)

SETTINGS = {
    "LeNet5, batch 128": ["model=lenet5", "dataset.batch_size=128"],
    "MLP 2x100, batch 32 (source 003)": ["model=mlp", "model.hidden_sizes=[100,100]", "dataset.batch_size=32"],
}


def speed(rounds: int, batches: int, out: Path) -> None:
    rows = [
        "| setting | bare `Adam(params, lr)`, samples/s | bare fused Adam, samples/s | harness, samples/s | "
        "harness / bare (goal >= 0.95 LeNet5, >= 0.85 MLP) | harness / bare fused |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for j, (name, overrides) in enumerate(SETTINGS.items()):
            extra = [
                *overrides,
                "trainer.max_epochs=1",
                f"trainer.limit_train_batches={batches}",
                "trainer.limit_val_batches=0",
                "trainer.limit_test_batches=1",
            ]
            plain, fused, ours = [], [], []
            for i in range(rounds):
                cfg = config(Path(tmp) / f"setting{j}-{i}", extra)
                plain.append(bare_loop(cfg, 1, fused=False, max_batches=batches)[0])
                fused.append(bare_loop(cfg, 1, fused=True, max_batches=batches)[0])
                ours.append(run_job(cfg)["train_samples_per_s"])
                print(
                    f"{name} round {i}: bare {plain[-1]:.0f}, bare fused {fused[-1]:.0f}, harness {ours[-1]:.0f} samples/s",
                    flush=True,
                )
            ratio = median_ratio(ours, plain)
            ratio_fused = median_ratio(ours, fused)
            rows.append(
                f"| {name} | {statistics.median(plain):.0f} | {statistics.median(fused):.0f} | {statistics.median(ours):.0f} | "
                f"{ratio:.3f} | {ratio_fused:.3f} |"
            )
    write_section(
        out,
        "speed",
        f"MNIST, standard dropout (p=0.5, fc sites), Adam 1e-3, {batches} training batches per round, "
        f"{rounds} alternating rounds, medians; CPU threads={torch.get_num_threads()}, {machine()}; "
        f"`python scripts/bench_harness.py speed --rounds {rounds} --batches {batches}`",
        rows,
    )


def e2e(rounds: int, epochs: int, out: Path) -> None:
    tiny = ["trainer.max_steps=1", "trainer.limit_val_batches=1", "trainer.limit_test_batches=1"]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        run_job(config(Path(tmp) / "first", tiny))  # the first job of the process reads the data
        first = time.perf_counter() - start
        fixed, job, bare = [], [], []
        for i in range(rounds):
            start = time.perf_counter()
            run_job(config(Path(tmp) / f"fixed{i}", tiny))
            fixed.append(time.perf_counter() - start)
            cfg = config(Path(tmp) / f"job{i}", [f"trainer.max_epochs={epochs}"])
            start = time.perf_counter()
            bare_loop(cfg, epochs, validate=True, test_best=True)  # the harness tests the best-validation weights too
            bare.append(time.perf_counter() - start)
            start = time.perf_counter()
            run_job(cfg)
            job.append(time.perf_counter() - start)
            print(f"round {i}: fixed {fixed[-1]:.2f} s, bare {bare[-1]:.1f} s, harness {job[-1]:.1f} s", flush=True)
    ratio = median_ratio(bare, job)
    three_epochs = statistics.median(job) * 3 / epochs
    rows = [
        "| measure | value |",
        "| --- | --- |",
        f"| whole job, harness (median), s | {statistics.median(job):.2f} |",
        f"| same epochs, bare script (median), s | {statistics.median(bare):.2f} |",
        f"| end to end, bare time / harness time (goal >= 0.90) | {ratio:.3f} |",
        f"| fixed cost per job, first job of a process (data read), s | {first:.2f} |",
        f"| fixed cost per job, later jobs (data cached; upper bound: includes 3 batches), s | {statistics.median(fixed):.2f} |",
        f"| later jobs' fixed cost / 3-epoch LeNet5 MNIST job (goal <= 2 %) | {100 * statistics.median(fixed) / three_epochs:.2f} % |",
    ]
    write_section(
        out,
        "end to end",
        f"LeNet5 MNIST (54k/6k/10k), standard dropout, batch 128, {epochs} epoch(s) of train + val + test per "
        f"job, {rounds} alternating rounds in one process; the 3-epoch job time is {epochs}-epoch job x 3/{epochs}; "
        f"CPU threads={torch.get_num_threads()}, {machine()}; `python scripts/bench_harness.py e2e --rounds {rounds} --epochs {epochs}`",
        rows,
    )


#: the flagship's job (conf/experiment/dropout_zoo.yaml) with standard dropout at p = 0.5
FLAGSHIP = [
    "model=lenet5",
    "dropout=standard",
    "dropout.p=0.5",
    "dataset.batch_size=64",
    "dataset.subset={train: 1000, val: 1000, test: null}",
    "trainer.enable_progress_bar=false",
]


def bare_worker(epochs: int) -> None:
    """``bare-worker`` mode: an independent bare script in its own process, glibc's malloc as it starts
    (``train()`` never runs here): reads the data once, then for each line ``<folder>`` on stdin runs the
    flagship job's bare loop and prints ``wall cpu faults`` (the first line: one epoch, the warm-up)."""
    for i, line in enumerate(sys.stdin):
        cfg = config(Path(line.strip()), [*FLAGSHIP, f"trainer.max_epochs={epochs}"])
        n = 1 if i == 0 else epochs  # the first: the data read, as the harness's warm-up job
        print(*timed(lambda: bare_loop(cfg, n, validate=True, test_best=True)), flush=True)


def flagship(rounds: int, epochs: int, out: Path) -> None:
    rows = [
        "| round | bare script, own process, s (CPU s) | bare loop in the harness's process, s (CPU s) "
        "| Lightning barebones floor, s (CPU s) | harness, s (CPU s) "
        "| own-process bare / harness, wall | same-process bare / harness, wall | same-process bare / floor, wall |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    worker = subprocess.Popen(
        [sys.executable, __file__, "bare-worker", "--epochs", str(epochs), "--threads", str(torch.get_num_threads())],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    own, same, floor, ours = [], [], [], []  # (wall s, CPU s, minor page faults) per round

    def independent(folder: Path) -> tuple[float, float, int]:
        worker.stdin.write(f"{folder}\n")
        worker.stdin.flush()
        wall, cpu, minflt = worker.stdout.readline().split()
        return float(wall), float(cpu), int(minflt)

    with tempfile.TemporaryDirectory() as tmp:
        independent(Path(tmp) / "warm-bare")
        run_job(config(Path(tmp) / "warm", [*FLAGSHIP, "trainer.max_epochs=1"]))  # the data read, once per process
        lightning_floor(config(Path(tmp) / "warm-floor", [*FLAGSHIP, "trainer.max_epochs=1"]), 1)
        for i in range(rounds):
            cfg = config(Path(tmp) / f"job{i}", [*FLAGSHIP, f"trainer.max_epochs={epochs}"])
            runs = [
                (own, lambda: independent(Path(tmp) / f"bare{i}")),
                (same, lambda: timed(lambda: bare_loop(cfg, epochs, validate=True, test_best=True))),
                (floor, lambda: timed(lambda: lightning_floor(cfg, epochs))),
                (ours, lambda: timed(lambda: run_job(cfg))),
            ]
            for results, run in in_turn(runs, i):
                results.append(run())
            rows.append(
                f"| {i} | {own[-1][0]:.2f} ({own[-1][1]:.2f}) | {same[-1][0]:.2f} ({same[-1][1]:.2f}) | "
                f"{floor[-1][0]:.2f} ({floor[-1][1]:.2f}) | {ours[-1][0]:.2f} ({ours[-1][1]:.2f}) | "
                f"{own[-1][0] / ours[-1][0]:.3f} | {same[-1][0] / ours[-1][0]:.3f} | {same[-1][0] / floor[-1][0]:.3f} |"
            )
            print(rows[-1], flush=True)
    worker.stdin.close()
    worker.wait()

    def median(runs, k=0):
        return statistics.median(r[k] for r in runs)

    def ratio(xs, ys):
        return median_ratio([x[0] for x in xs], [y[0] for y in ys])

    rows.append(
        f"| median | {median(own):.2f} ({median(own, 1):.2f}) | {median(same):.2f} ({median(same, 1):.2f}) | "
        f"{median(floor):.2f} ({median(floor, 1):.2f}) | {median(ours):.2f} ({median(ours, 1):.2f}) | "
        f"{ratio(own, ours):.3f} | **{ratio(same, ours):.3f}** (goal >= 0.95) | {ratio(same, floor):.3f} |"
    )
    rows.append(
        f"| minor page faults per job (median) | {median(own, 2):,.0f} | {median(same, 2):,.0f} | "
        f"{median(floor, 2):,.0f} | {median(ours, 2):,.0f} | | | |"
    )
    write_section(
        out,
        "flagship regime",
        f"LeNet5 + standard dropout p=0.5, MNIST, 1,000 training / 1,000 validation images, "
        f"the 10k test set, batch 64, {epochs} epochs = {epochs * 16} steps, validation every epoch, test of the last and "
        f"the best-validation weights; each job with its data already in memory, {rounds} rounds alternating the four, in reversed order every other round "
        f"(wall time and the process' CPU time). The bare script runs in its own process with glibc's malloc as "
        f"it starts (an independent script, as a researcher writes it); the same bare loop also runs in the "
        f"harness's process, after `train()` set glibc's malloc to keep freed memory "
        f"(`dropout_lab.launch.keep_freed_memory`): like for like, the goal's measure. The Lightning barebones floor is "
        f"the same work (seed, batches, fused Adam, passes) run by Lightning's own `Trainer(barebones=True)` "
        f"(checkpointing, logging, progress bar, summary, sanity check off) with a module of a training, a validation "
        f"and a test step (`benchlib.lightning_floor`): Lightning's loop with nothing of the harness, so the last "
        f"column bounds what any harness on Lightning's Trainer can reach. "
        f"On this shared VM one job's time ranged {min(ours)[0]:.2f}-{max(ours)[0]:.2f} s (harness) and "
        f"{min(same)[0]:.2f}-{max(same)[0]:.2f} s (bare loop, harness's process) across the rounds; "
        f"CPU threads={torch.get_num_threads()}, {machine()}; "
        f"`python scripts/bench_harness.py flagship --rounds {rounds} --epochs {epochs}`",
        rows,
    )


def flagship_calls(out: Path) -> None:
    """Python calls per epoch of a flagship job (``sys.setprofile``: a 10-epoch job's minus a 5-epoch job's, / 5, so
    set-up and tests cancel) for the bare loop, Lightning's barebones floor and the harness: counts noise cannot
    move."""
    runs = {
        "bare loop": lambda cfg, n: bare_loop(cfg, n, validate=True, test_best=True),
        "Lightning barebones floor (`benchlib.lightning_floor`)": lightning_floor,
        "harness (`train(cfg)`)": lambda cfg, n: run_job(cfg),
    }
    rows = ["| run | Python calls per epoch | over the bare loop |", "| --- | --- | --- |"]
    with tempfile.TemporaryDirectory() as tmp:
        counts = {}
        for j, (name, run) in enumerate(runs.items()):
            run(config(Path(tmp) / f"warm{j}", [*FLAGSHIP, "trainer.max_epochs=1"]), 1)  # imports, the data read
            calls = {
                n: python_calls(lambda: run(config(Path(tmp) / f"{j}-{n}", [*FLAGSHIP, f"trainer.max_epochs={n}"]), n))
                for n in (5, 10)
            }
            counts[name] = (calls[10] - calls[5]) / 5
            rows.append(f"| {name} | {counts[name]:,.0f} | {counts[name] - next(iter(counts.values())):+,.0f} |")
            print(rows[-1], flush=True)
    write_section(
        out,
        "flagship regime: Python calls per epoch",
        "The flagship job of the section above (16 training steps, one validation pass of 1,000 images per epoch), "
        "Python function calls per epoch (`sys.setprofile` call events, `benchlib.python_calls`): a 10-epoch job's "
        f"minus a 5-epoch job's, / 5; {machine()}; `python scripts/bench_harness.py flagship-calls`",
        rows,
    )


def accuracy(dataset: str, model: str, epochs: int, out: Path) -> None:
    extra = [
        f"dataset={dataset}",
        f"model={model}",
        f"trainer.max_epochs={epochs}",
        "trainer.enable_progress_bar=false",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        ours = run_job(config(Path(tmp) / "harness", extra))
        _, bare = bare_loop(config(Path(tmp) / "bare", extra), epochs)
    row = (
        f"| {model} | {dataset} | {epochs} | {100 * ours['test_acc']:.2f} | {100 * bare:.2f} | "
        f"{100 * (ours['test_acc'] - bare):+.2f} | `python scripts/bench_harness.py accuracy --dataset {dataset} --model {model} --epochs {epochs}` |"
    )
    header_rows = [
        "| model | dataset | epochs | harness test acc % | bare loop test acc % | difference | command |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    write_table(
        out,
        "Standard dropout p=0.5 on the fc sites, Adam 1e-3, batch 128, seed 0, 54k/6k/10k split, CPU",
        header_rows + [row],
        append=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["speed", "e2e", "flagship", "flagship-calls", "accuracy", "bare-worker"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=200, help="training batches per round (speed)")
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--epochs", type=int, help="accuracy: 3 by default; e2e: 1")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "speed":
        speed(args.rounds, args.batches, args.out or ROOT / "docs" / "bench_harness.md")
    elif args.mode == "flagship":
        flagship(args.rounds, args.epochs or 40, args.out or ROOT / "docs" / "bench_harness.md")
    elif args.mode == "flagship-calls":
        flagship_calls(args.out or ROOT / "docs" / "bench_harness.md")
    elif args.mode == "bare-worker":
        bare_worker(args.epochs or 40)
    elif args.mode == "e2e":
        e2e(args.rounds, args.epochs or 1, args.out or ROOT / "docs" / "bench_harness.md")
    else:
        accuracy(args.dataset, args.model, args.epochs or 3, args.out or ROOT / "docs" / "harness_accuracy.md")


if __name__ == "__main__":
    main()
