"""eval.py re-tests a saved job from its folder alone (its own .hydra/config.yaml and checkpoint) and
gets the numbers the job itself reported: Monte-Carlo dropout and EDropout's pruned network included."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import DATA_ROOT, ROOT, SMOKE, run_cli
from dropout_lab.checkpoints import safe_load
from dropout_lab.retest import retest

TINY = [*SMOKE, "trainer.max_epochs=3", "trainer.limit_train_batches=4"]


def only_test(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k.startswith("test/")}


@pytest.mark.slow
def test_eval_py_retests_the_last_checkpoint_to_the_jobs_own_metrics(tmp_path):
    job = tmp_path / "job"
    trained = run_cli(
        [f"hydra.run.dir={job}", *TINY, "dropout=standard", "keep_checkpoint=last", "eval.mc_samples=3"], cwd=tmp_path
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    summary = (job / "metrics.json").read_bytes()
    env = {**os.environ, "DROPOUT_LAB_DATA": DATA_ROOT, "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), f"run_dir={job}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"written to {job / 'eval_last.json'}" in proc.stdout
    again = json.loads((job / "eval_last.json").read_text())
    original = only_test(json.loads(summary)["metrics"])
    assert {"test/acc", "test/loss", "test/mc_acc", "test/mc_nll", "test/mc_ece"} <= set(original)
    assert only_test(again["metrics"]) == original and again["epoch"] == 2
    assert (job / "metrics.json").read_bytes() == summary  # the original results stay as they were


@pytest.mark.slow
def test_best_checkpoint_of_edropout_retests_its_pruned_network(tmp_path):
    job = tmp_path / "job"
    trained = run_cli(
        [
            f"hydra.run.dir={job}",
            *TINY,
            "dropout=edropout",
            "dropout.warmup=0",
            "dropout.update_every=2",
            "keep_checkpoint=best",
            "eval.checkpoint=best",
        ],
        cwd=tmp_path,
    )
    assert trained.returncode == 0, trained.stderr[-2000:]
    summary = json.loads((job / "metrics.json").read_text())
    assert [e["epoch"] for e in summary["history"]] == [0, 1, 2]  # testing on best.ckpt kept the whole history
    assert sorted(p.name for p in (job / "checkpoints").iterdir()) == ["best.ckpt"]
    best = safe_load(job / "checkpoints" / "best.ckpt")
    accs = [e["val/acc"] for e in summary["history"]]
    assert best["val/acc"] == summary["best_val_acc"] == max(accs) and best["epoch"] == accs.index(
        max(accs)
    )  # the first best epoch
    metrics, path = retest(job, "best")
    assert any(k.startswith("test/acc_") for k in metrics)  # EDropout's second network (pruned or full)
    assert only_test(metrics) == only_test(summary["metrics"]) and path == job / "eval_best.json"
    with pytest.raises(FileNotFoundError, match="ckpt=last: .*this job kept: best.ckpt.*keep_checkpoint=last"):
        retest(job, "last")
    with pytest.raises(FileNotFoundError, match="no .hydra/config.yaml"):
        retest(tmp_path, "last")
