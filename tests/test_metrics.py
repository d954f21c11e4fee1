"""Test metrics of a job: accuracy, NLL, ECE and Brier score against hand-computed values, both networks
(last epoch and best validation epoch) tested, and the per-example predictions stored for later tests."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from conftest import SMOKE, make_cfg
from dropout_lab.module import calibration
from dropout_lab.train import train


def test_calibration_by_hand():
    """Two samples of class 0: one right at confidence 0.8, one wrong at confidence 0.7."""
    probs = torch.tensor([[0.8, 0.2], [0.3, 0.7]])
    scores = calibration(probs, torch.tensor([0, 0]), 2)
    assert scores["acc"] == 0.5
    assert scores["nll"] == pytest.approx(-(math.log(0.8) + math.log(0.3)) / 2)
    assert scores["brier"] == pytest.approx(((0.2**2 + 0.2**2) + (0.7**2 + 0.7**2)) / 2)
    assert scores["ece"] == pytest.approx(0.5 * abs(1 - 0.8) + 0.5 * abs(0 - 0.7))  # two bins, half the samples each


def test_a_job_tests_both_networks_and_stores_its_predictions(tmp_path):
    cfg = make_cfg([*SMOKE, "trainer.max_epochs=3", "trainer.limit_train_batches=3", "dropout=standard"], tmp_path)
    metrics = train(cfg)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    history = summary["history"]
    best_epoch = max(range(len(history)), key=lambda i: (history[i]["val/acc"], -i))
    for network in ("test", "test_best"):
        assert {f"{network}/{m}" for m in ("acc", "loss", "ece", "brier")} <= set(metrics)
    with np.load(tmp_path / "predictions.npz") as z:
        y, pred, p_true, pred_best = z["y"], z["pred"], z["p_true"], z["pred_best"]
        assert len(y) == len(pred) == len(p_true) == 256 and p_true.dtype == np.float16 and pred.dtype == np.int16
        assert (pred == y).mean() == pytest.approx(metrics["test/acc"])
        assert (pred_best == y).mean() == pytest.approx(metrics["test_best/acc"])
        assert -np.log(np.maximum(p_true.astype(np.float64), 1e-12)).mean() == pytest.approx(
            metrics["test/loss"], rel=2e-3
        )
    if best_epoch == len(history) - 1:  # the best epoch is the last: the two networks are one
        assert metrics["test_best/acc"] == metrics["test/acc"]
