"""The Optuna preset (conf/hparams_search/dropout_p.yaml): a 3-trial study on a tiny subset tunes p and the
method's main argument within the stated search space, maximises val/acc_best, and leaves one job folder per
trial laid out as a -m sweep's (what scripts/report.py reads)."""

from __future__ import annotations

import json

import pytest
from omegaconf import OmegaConf

from conftest import SMOKE, run_cli
from dropout_lab.dropout import spec


@pytest.mark.slow
def test_three_trial_study_tunes_p_and_block_size(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    sweep = tmp_path / "study"
    result = run_cli(
        [
            "hparams_search=dropout_p",
            "dropout=dropblock",
            "hydra.sweeper.n_trials=3",
            *SMOKE,
            "dataset.subset={train: 256, val: 128, test: 128}",
            "trainer.limit_train_batches=2",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    jobs = [json.loads(path.read_text()) for path in sweep.glob("*/metrics.json")]
    assert len(jobs) == 3 and all(job["status"] == "ok" for job in jobs)
    assert all((path.parent / ".hydra" / "overrides.yaml").exists() for path in sweep.glob("*/metrics.json"))
    space = spec.get("dropblock").search_space()
    assert space["dropout.p"] == "interval(0.02, 0.3)" and space["dropout.block_size"] == "choice(3, 5, 7)"
    tried = {(job["config"]["dropout"]["p"], job["config"]["dropout"]["block_size"]) for job in jobs}
    assert len(tried) == 3 and all(0.02 <= p <= 0.3 and size in (3, 5, 7) for p, size in tried)
    best = OmegaConf.load(sweep / "optimization_results.yaml")
    top = max(jobs, key=lambda job: job["best_val_acc"])
    assert best.best_value == pytest.approx(top["best_val_acc"])  # the study maximised train.py's val/acc_best
    assert best.best_params["dropout.p"] == pytest.approx(top["config"]["dropout"]["p"])
    assert result.stdout.splitlines()[-1] == f"3 ok, 0 failed; report: python scripts/report.py {sweep}"
