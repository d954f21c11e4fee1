"""The confirmation stage of a two-stage comparison (docs/sweeps.md#the-flagship):
``python scripts/confirm.py <sweep> [--top 4] [--replicates N --first-seed S] [--dry-run] [-- extra overrides]``.

Reads the tuning runs of ``<sweep>`` (a finished tuning sweep, e.g. ``experiment=dropout_zoo``), selects each
method's choice on the tuning seeds' validation accuracy (:func:`dropout_lab.report.candidates`), promotes
``standard``, ``none`` and the ``--top`` other methods with the highest tuning validation accuracy per
(dataset, model) block (:func:`dropout_lab.report.promoted`; the test set plays no part), and launches, for
each promoted choice, one Hydra multirun of the evaluation replicates the preset declares
(``report.evaluation_seeds``; or ``--replicates`` seeds from ``--first-seed``) into the same sweep folder with the sweep's own experiment and launcher
(``resume=true``: an interrupted confirmation continues where it stopped). Then
``python scripts/report.py <sweep>`` reports the evaluation replicates.

Every launch is one ``train.py -m`` command, printed before it runs; ``--dry-run`` only prints them.
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from dropout_lab.report import candidates, finished_runs, load_jobs, promoted, settings_from

ROOT = Path(__file__).resolve().parents[1]


def commands(sweep: Path, top: int, replicates: int | None, first_seed: int, extra: list[str]) -> list[list[str]]:
    """One ``python train.py -m ...`` argument list per promoted (block, method) choice, on ``replicates``
    seeds from ``first_seed`` (None: the sweep's declared ``report.evaluation_seeds``).

    Raises:
        ValueError: when the sweep declares no tuning seeds, or no evaluation seeds and ``replicates`` is
            None, or an evaluation seed is a tuning seed.
    """
    jobs = load_jobs(sweep)
    settings = settings_from(jobs)
    if not settings.tuning_seeds:
        raise ValueError(f"{sweep}: its jobs declare no report.tuning_seeds, so there is no tuning stage to confirm")
    if replicates is None and not settings.evaluation_seeds:
        raise ValueError(f"{sweep}: its jobs declare no report.evaluation_seeds; give --replicates")
    seeds = list(settings.evaluation_seeds) if replicates is None else list(range(first_seed, first_seed + replicates))
    if set(seeds) & set(settings.tuning_seeds):
        raise ValueError(
            f"evaluation seeds {seeds[0]}..{seeds[-1]} overlap the tuning seeds {settings.tuning_seeds}; use --first-seed"
        )
    runs, _ = finished_runs(jobs, settings)
    multirun = yaml.safe_load((sweep / "multirun.yaml").read_text())
    task = [
        o
        for o in multirun["hydra"]["overrides"]["task"]
        if o.split("=", 1)[0].lstrip("+~") in ("experiment", "hydra/launcher")
    ]
    launcher = [o for o in multirun["hydra"]["overrides"]["hydra"] if o.startswith("hydra/launcher=")]
    out = []
    for _, r in promoted(candidates(runs), top).iterrows():
        choice = [
            f"dropout={r['method']}",
            *([f"dropout.p={r['p']:g}"] if not math.isnan(r["p"]) else []),
            *(a.strip() for a in r["args"].split(",") if a.strip()),
        ]
        out.append(
            [
                sys.executable,
                str(ROOT / "train.py"),
                "-m",
                *task,
                *launcher,
                f"hydra.sweep.dir={sweep}",
                "resume=true",
                f"dataset={r['dataset']}",
                *choice,
                f"seed={','.join(map(str, seeds))}",
                *extra,
            ]
        )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep", type=Path, help="the tuning sweep's folder (hydra.sweep.dir)")
    parser.add_argument("--top", type=int, default=4, help="methods promoted per block besides standard and none")
    parser.add_argument(
        "--replicates", type=int, help="evaluation replicates per promoted choice (default: report.evaluation_seeds)"
    )
    parser.add_argument(
        "--first-seed", type=int, default=100, help="first evaluation seed (disjoint from the tuning seeds)"
    )
    parser.add_argument("--dry-run", action="store_true", help="print the commands only")
    parser.add_argument("extra", nargs="*", help="further Hydra overrides for every launch (after --)")
    args = parser.parse_args()
    failed = 0
    for cmd in commands(args.sweep.resolve(), args.top, args.replicates, args.first_seed, args.extra):
        print("$", shlex.join(cmd[1:]), flush=True)
        if not args.dry_run:
            failed += subprocess.run(cmd, cwd=ROOT).returncode != 0
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
