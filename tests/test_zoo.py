"""Properties every dropout method must have, checked over every registered method (its spec)."""

import json

import pytest
import torch

from conftest import SMOKE, make_cfg, run_cli
from dropout_lab.config import attach, instantiate_model
from dropout_lab.dropout import DropoutMethod, spec

#: refused at every site of the default model (its mask would be standard's / spatial's: tests/test_variational.py)
REFUSED = ("variational",)
METHODS = [key for key in spec.specs() if key not in REFUSED]


@pytest.mark.parametrize("method", METHODS)
def test_eval_is_deterministic_and_shape_preserving(method, tmp_path):
    torch.manual_seed(0)
    cfg = make_cfg([f"dropout={method}"], tmp_path)  # each method at its default sites
    model = instantiate_model(cfg)
    methods = attach(model, cfg.dropout)
    assert methods and all(isinstance(m, DropoutMethod) for m in methods)
    x = torch.randn(8, 1, 28, 28)
    model.train()
    model(x)  # one training forward so stateful methods have seen data
    model.eval()
    out = model(x)
    assert out.shape == (8, 10)
    assert torch.equal(out, model(x))


@pytest.mark.slow
def test_sweep_over_every_method_completes_and_records_drop_fraction(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(
        [
            "-m",
            f"dropout=glob(*,exclude=[{','.join(REFUSED)},lrp_paper])",
            f"hydra.sweep.dir={sweep}",
            *SMOKE,
            "trainer.limit_train_batches=4",
        ],
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summaries = {
        json.loads(p.read_text())["hparams"]["method"]: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")
    }
    assert sorted(summaries) == METHODS
    for method, summary in summaries.items():
        assert summary["status"] == "ok", (method, summary["error"])
        assert summary["drop_fraction"] is not None and 0.0 <= summary["drop_fraction"] < 1.0, method
        assert 0.0 <= summary["test_acc"] <= 1.0
