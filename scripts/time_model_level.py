"""Per-step training time of sparse_mask, lrp and shapley relative to `standard` (LeNet5, MNIST, batch 128,
CPU, fc sites), in one process, round-robin; Shapley's per-update cost is measured separately so the
step-time factor can be given for any cadence: factor(K) = (t_scored + T_update / K) / t_standard.

    PYTHONPATH=src flock /tmp/dropout-lab-cpu.lock python scripts/time_model_level.py [--steps 200] [--rounds 3]

Prints a table and writes it to docs/time_model_level.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from hydra import compose, initialize_config_dir

from dropout_lab.train import train

ROOT = Path(__file__).resolve().parents[1]


def run(out: Path, overrides: list[str]) -> tuple[dict, dict]:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"output_dir={out}", "trainer.enable_progress_bar=false", "trainer.accelerator=cpu", *overrides])
    metrics = train(cfg)
    return json.loads((out / "metrics.json").read_text()), metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shapley-every", type=int, default=50, help="cadence used while timing shapley")
    args = parser.parse_args()
    n = args.steps
    common = [f"++trainer.max_steps={n}", "++trainer.limit_val_batches=0", "++trainer.limit_test_batches=1",
              f"dataset.subset={{train: {n * 128}, val: 256, test: 128}}", "dropout.sites=fc"]
    cases = {"standard": [], "sparse_mask": [], "lrp": [], "lrp_every2": ["dropout.update_every=2"],
             "shapley": [f"dropout.update_every={args.shapley_every}"]}
    ms = {k: [] for k in cases}
    upd_s, upd_fwd, upd_coal = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for case, extra in cases.items():
                summary, metrics = run(Path(tmp) / f"{case}-{r}", [f"dropout={case.split('_every')[0]}", *common, *extra])
                seconds = summary["train_seconds"]
                if case == "shapley":
                    updates = len(range(0, n, args.shapley_every))
                    per_update = sum(metrics[f"dropout/{s}/shapley_seconds"] for s in ("drop_fc1", "drop_fc2"))
                    upd_s.append(per_update)
                    upd_fwd.append(sum(metrics[f"dropout/{s}/shapley_forwards"] for s in ("drop_fc1", "drop_fc2")))
                    upd_coal.append(sum(metrics[f"dropout/{s}/shapley_coalitions"] for s in ("drop_fc1", "drop_fc2")))
                    seconds -= updates * per_update
                ms[case].append(1000 * seconds / n)
            print(f"round {r + 1}/{args.rounds}", {k: round(v[-1], 2) for k, v in ms.items()}, flush=True)
    base = statistics.median(ms["standard"])
    rows = ["| method | ms/step | x standard |", "| --- | --- | --- |"]
    for case in cases:
        med = statistics.median(ms[case])
        rows.append(f"| {case} | {med:.2f} | {med / base:.2f} |")
    T = 1000 * statistics.median(upd_s)
    t_sc = statistics.median(ms["shapley"])
    rows += ["", f"Shapley update (both fc sites): {T:.0f} ms, {statistics.median(upd_fwd):.0f} batched forwards, "
             f"{statistics.median(upd_coal):.0f} coalitions of 128 held-out samples.", "",
             "| shapley update_every | x standard |", "| --- | --- |"]
    rows += [f"| {k} | {(t_sc + T / k) / base:.2f} |" for k in (50, 100, 200, 400, 1000)]
    table = "\n".join(rows)
    print(table)
    out = ROOT / "docs" / "time_model_level.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(f"`PYTHONPATH=src python scripts/time_model_level.py --steps {n} --rounds {args.rounds}` "
                   f"(LeNet5, MNIST, batch 128, CPU, fc sites, median of {args.rounds} round-robin rounds)\n\n{table}\n")


if __name__ == "__main__":
    main()
