"""A chaos sweep that loses nothing: SIGKILL ``gpu_pool`` workers and the launcher at random moments, resume
until done, and check every result against an undisturbed run of the same sweep.

    python scripts/chaos.py [--jobs 48] [--workers 2] [--kills 8] [--epochs 6] [--seed 0] [--out docs/faults.md]

1. Runs the sweep undisturbed: ``--jobs`` LeNet5 MNIST jobs (seeds 0..J-1, 256 training images, ``--epochs``
   epochs of 4 batches, ``deterministic=true``) under ``hydra/launcher=gpu_pool`` with ``--workers`` workers.
2. Runs it again into a second folder and, ``--kills`` times, waits a random 1-6 s and SIGKILLs a random
   worker (what the kernel's out-of-memory killer does) or, with probability 1/3, the launcher itself; after a
   killed launcher it checks that no worker outlives it by 5 s and that every slot lock is free, and re-runs
   the command with ``resume=true``; a sweep that ends with a failed job (the killed worker's) is re-run with
   ``resume=true`` too, until it ends with every job ``ok``.
3. Checks: every job ``ok``; its test and validation metrics and per-epoch history equal the undisturbed
   run's; no job started from scratch twice (``starts`` in its ``metrics.json`` holds one 0); no ``*.tmp`` file
   in the sweep and nothing left in the run's own ``$TMPDIR``.

Prints the table (kills by target, resumes, jobs, results lost) and writes it as a section of ``--out``;
exits 1 if a check fails. ``tests/test_faults.py`` runs a reduced version.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from benchlib import machine, start, write_section  # noqa: E402

from dropout_lab import metrics as M  # noqa: E402
from dropout_lab.pool import alive, worker_pids  # noqa: E402

COMPARED = (M.test("acc"), M.test("loss"), M.VAL_ACC_BEST, M.test("acc", M.TEST_BEST))


def command(sweep: Path, jobs: int, workers: int, epochs: int) -> list[str]:
    """The arguments of ``train.py`` for the sweep into ``sweep``."""
    return [
        "-m",
        "hydra/launcher=gpu_pool",
        f"hydra.launcher.n_jobs={workers}",
        f"hydra.sweep.dir={sweep}",
        "trainer=smoke",
        "dataset.subset={train: 256, val: 128, test: 128}",
        "dataset.batch_size=64",
        "trainer.limit_train_batches=4",
        f"trainer.max_epochs={epochs}",
        "checkpoint_every=0",
        "deterministic=true",
        "threads=1",
        f"seed={','.join(map(str, range(jobs)))}",
    ]


def results(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def holders(lock: Path) -> list[str]:
    """The processes holding ``lock`` (from ``/proc/locks``), as ``pid: command``."""
    inode = os.stat(lock).st_ino
    pids = [
        line.split()[4]
        for line in Path("/proc/locks").read_text().splitlines()
        if line.split()[5].endswith(f":{inode}")
    ]
    return [
        f"{pid}: {Path(f'/proc/{pid}/cmdline').read_bytes().replace(bytes(1), b' ').decode()[:120]}"
        for pid in pids
        if Path(f"/proc/{pid}").exists()
    ]


def held_slots(lock_dir: Path, wait: float = 5.0) -> list[str]:
    """Slot locks still held ``wait`` seconds after the check starts, with their holders."""
    deadline, held = time.time() + wait, []
    while True:
        held = []
        for lock in lock_dir.glob("dropout-lab-slot*.lock"):
            with open(lock, "w") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    held.append(f"{lock.name} held by {holders(lock)}")
        if not held or time.time() > deadline:
            return held
        time.sleep(0.1)


def chaos(args: argparse.Namespace, work: Path) -> tuple[dict, list[str]]:
    """Run both sweeps under ``work``; return the counts and the failed checks."""
    rng = random.Random(args.seed)
    locks, tmp = work / "locks", work / "tmp"
    locks.mkdir()
    tmp.mkdir()
    env = {"DROPOUT_LAB_LOCK_DIR": str(locks), "TMPDIR": str(tmp)}
    calm, chaotic = work / "calm", work / "chaos"
    begun = time.perf_counter()
    if start(command(calm, args.jobs, args.workers, args.epochs), env=env, capture=False).wait():
        raise RuntimeError("the undisturbed sweep failed")
    counts = {
        "jobs": args.jobs,
        "undisturbed s": round(time.perf_counter() - begun),
        "workers killed": 0,
        "launcher killed": 0,
        "runs": 0,
        "orphans": 0,
    }
    begun = time.perf_counter()
    kills, problems = args.kills, []
    while True:
        cmd = command(chaotic, args.jobs, args.workers, args.epochs) + (["resume=true"] if counts["runs"] else [])
        proc = start(cmd, env=env, capture=False)
        counts["runs"] += 1
        while kills and proc.poll() is None:
            time.sleep(rng.uniform(1, 6))
            pids = worker_pids(proc.pid)
            if proc.poll() is not None or not pids:
                continue
            kills -= 1
            if rng.random() < 1 / 3:
                proc.kill()
                proc.wait()
                counts["launcher killed"] += 1
                deadline = time.time() + 5
                while any(alive(p) for p in pids) and time.time() < deadline:
                    time.sleep(0.05)
                counts["orphans"] += sum(alive(p) for p in pids)
                problems += [f"after the launcher died: {h}" for h in held_slots(locks)]
                break
            os.kill(rng.choice(pids), 9)
            counts["workers killed"] += 1
        if proc.wait() == 0 and not kills:
            break
    counts["disturbed s"] = round(time.perf_counter() - begun)
    calm_runs, chaos_runs = results(calm), results(chaotic)
    lost = [
        name
        for name, s in calm_runs.items()
        if name not in chaos_runs
        or chaos_runs[name]["status"] != "ok"
        or any(chaos_runs[name]["metrics"].get(k) != s["metrics"].get(k) for k in COMPARED)
        or [e.get("val/acc") for e in chaos_runs[name]["history"]] != [e.get("val/acc") for e in s["history"]]
    ]
    twice = [name for name, s in chaos_runs.items() if s.get("starts", []).count(0) > 1]
    resumed = [name for name, s in chaos_runs.items() if len(s.get("starts", [])) > 1]
    left = [str(p) for p in chaotic.rglob("*.tmp")] + [str(p) for p in tmp.rglob("*") if p.is_file()]
    counts |= {
        "jobs resumed": len(resumed),
        "results lost": len(lost),
        "trained twice from scratch": len(twice),
        "temp files left": len(left),
    }
    if len(calm_runs) != args.jobs or any(s["status"] != "ok" for s in calm_runs.values()):
        problems.append("the undisturbed sweep did not finish every job")
    problems += [f"{name}: differs from the undisturbed run" for name in lost] + [
        f"{name}: trained twice from scratch" for name in twice
    ]
    problems += [f"left behind: {path}" for path in left] + (["orphan workers"] if counts["orphans"] else [])
    return counts, problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=48)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="markdown file to write the table into (a section 'Chaos sweep')")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        counts, problems = chaos(args, Path(work))
    rows = [
        "| " + " | ".join(counts) + " |",
        "|" + "---|" * len(counts),
        "| " + " | ".join(str(v) for v in counts.values()) + " |",
    ]
    print("\n".join(rows))
    print("\n".join(problems) or "every job ok and equal to the undisturbed run; nothing left behind")
    if args.out:
        header = (
            f"`python scripts/chaos.py --jobs {args.jobs} --workers {args.workers} --kills {args.kills} --epochs {args.epochs} "
            f"--seed {args.seed}` on {machine()}:"
        )
        write_section(args.out, "Chaos sweep", header, rows)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
