"""scripts/confirm.py: the confirmation stage promotes on validation only and launches each promoted choice on
fresh evaluation replicates into the tuning sweep's folder with its experiment and launcher."""

from __future__ import annotations

import importlib.util

import pytest
import yaml
from test_report import job

from conftest import ROOT

spec = importlib.util.spec_from_file_location("confirm", ROOT / "scripts" / "confirm.py")
confirm = importlib.util.module_from_spec(spec)
spec.loader.exec_module(confirm)


def tuning_sweep(sweep, tuning):
    for seed in (0, 1):
        job(sweep, "standard", 0.5, seed, val=0.80, test=0.99, tuning=tuning)
        job(sweep, "none", 0.0, seed, val=0.70, test=0.99, tuning=tuning)
        job(sweep, "gaussian", 0.1, seed, val=0.90, test=0.10, tuning=tuning)
        job(sweep, "gaussian", 0.3, seed, val=0.88, test=0.99, tuning=tuning)
        job(sweep, "spatial", 0.5, seed, val=0.85, test=0.99, tuning=tuning)
    (sweep / "multirun.yaml").write_text(
        yaml.safe_dump(
            {
                "hydra": {
                    "overrides": {
                        "hydra": ["hydra/launcher=gpu_pool", f"hydra.sweep.dir={sweep}"],
                        "task": ["experiment=dropout_zoo", "dropout.p=0.1,0.3"],
                    }
                }
            }
        )
    )


def test_promotes_on_validation_and_launches_fresh_replicates(tmp_path):
    tuning_sweep(tmp_path, [0, 1])
    cmds = confirm.commands(tmp_path, top=1, replicates=3, first_seed=100, extra=["trainer.max_epochs=2"])
    tails = sorted(" ".join(c[3:]) for c in cmds)
    common = f"experiment=dropout_zoo hydra/launcher=gpu_pool hydra.sweep.dir={tmp_path} resume=true dataset=mnist"
    assert tails == sorted(
        [
            f"{common} dropout=gaussian dropout.p=0.1 seed=100,101,102 trainer.max_epochs=2",
            f"{common} dropout=none seed=100,101,102 trainer.max_epochs=2",
            f"{common} dropout=standard dropout.p=0.5 seed=100,101,102 trainer.max_epochs=2",
        ]
    )


def test_refuses_a_sweep_without_tuning_seeds_and_overlapping_seeds(tmp_path):
    tuning_sweep(tmp_path / "a", None)
    with pytest.raises(ValueError, match="declare no report.tuning_seeds"):
        confirm.commands(tmp_path / "a", 1, 3, 100, [])
    tuning_sweep(tmp_path / "b", [0, 1])
    with pytest.raises(ValueError, match="overlap the tuning seeds"):
        confirm.commands(tmp_path / "b", 1, 3, 1, [])


def test_declared_evaluation_seeds_are_the_default_and_must_be_disjoint(tmp_path):
    from dropout_lab.report import Settings

    tuning_sweep(tmp_path, [0, 1])
    for f in tmp_path.glob("*/metrics.json"):  # the preset declares its evaluation replicates
        s = f.read_text().replace('"tuning_seeds": [0, 1]', '"tuning_seeds": [0, 1], "evaluation_seeds": [7, 8]')
        f.write_text(s)
    (cmd, *_) = confirm.commands(tmp_path, top=1, replicates=None, first_seed=100, extra=[])
    assert cmd[-1] == "seed=7,8"
    with pytest.raises(ValueError, match="share \\[1\\]: tune and evaluate on different seeds"):
        Settings(tuning_seeds=(0, 1), evaluation_seeds=(1, 2))
