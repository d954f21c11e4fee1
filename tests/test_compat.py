"""dropout_lab.compat: each shim over a library's private internals does what it claims, so that a library
upgrade that moves one breaks here first."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from benchlib import python_calls
from torch import nn

from dropout_lab import compat


def test_result_metric_move_is_skipped_only_when_nothing_moves():
    from pytorch_lightning.trainer.connectors.logger_connector.result import _Metadata, _ResultMetric

    compat.install()
    metric = _ResultMetric(_Metadata(fx="training_step", name="loss"), is_tensor=True)
    metric.update(torch.tensor(2.0), 1)
    assert _ResultMetric.to is compat.fast_result_to
    assert metric.to(torch.device("cpu")) is metric and python_calls(lambda: metric.to(torch.device("cpu"))) <= 8
    assert metric.to(torch.device("meta")).value.device.type == "meta"  # a real move still goes to Lightning


def test_lightning_hook_name_is_stored_without_module_bookkeeping():
    class Module(compat.FastHookName, nn.Module):
        pass

    module = Module()
    # nn.Module.__setattr__ runs Parameter's and Buffer's Python __instancecheck__: 5 calls instead of 1
    assert python_calls(lambda: setattr(module, "_current_fx_name", "training_step")) == 1
    assert module._current_fx_name == "training_step" and "_current_fx_name" not in module._modules
    module.head = nn.Linear(2, 2)  # every other attribute still goes through nn.Module
    assert module._modules["head"] is module.head


def test_rng_states_round_trip_every_generator():
    states = compat.rng_states(include_cuda=False)
    first = (random.random(), np.random.rand(), torch.rand(1).item())
    compat.set_rng_states(states)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == first


def test_tb_file_writer_writes_raw_summaries(tmp_path):
    from tensorboard.compat.proto.summary_pb2 import Summary
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(tmp_path)) as writer:
        compat.tb_file_writer(writer).add_summary(Summary(value=[Summary.Value(tag="x", simple_value=1.0)]))
    assert list(tmp_path.glob("events.out.tfevents.*"))


def test_optimizer_kernel_devices_and_norm_layers():
    assert "cpu" in compat.fused_devices() and "cuda" in compat.foreach_devices()
    assert isinstance(nn.BatchNorm2d(3), compat.NORM_LAYERS) and isinstance(
        nn.InstanceNorm1d(3, track_running_stats=True), compat.NORM_LAYERS
    )
    assert not isinstance(nn.LayerNorm(3), compat.NORM_LAYERS)


def test_grid_expands_a_sweep_as_hydras_basic_sweeper():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(["dropout=none,standard", "dropout.p=0.1,0.3", "seed=0"])
    assert compat.grid(overrides) == [
        [f"dropout={m}", f"dropout.p={p}", "seed=0"] for m in ("none", "standard") for p in ("0.1", "0.3")
    ]


def test_optuna_params_reads_the_sweepers_syntax():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    distributions, fixed = compat.optuna_params(["dropout.p=interval(0.1, 0.5)", "seed=3"])
    assert set(distributions) == {"dropout.p"} and fixed == {"seed": "3"}


def test_null_profiler_is_the_trainers_unless_one_is_configured(tmp_path):
    from pytorch_lightning.profilers import PassThroughProfiler, Profiler, SimpleProfiler

    from conftest import SMOKE, make_cfg
    from dropout_lab.config import build

    profiler = compat.null_profiler()
    assert isinstance(profiler, Profiler) and profiler.profile("[Callback]History.on_train_batch_start") is (
        profiler.profile("[LightningModule]Classifier.training_step")
    )  # one shared no-op context, not one built per hook call
    trainer = build(make_cfg(SMOKE, tmp_path)).trainer(logger=False)
    assert type(trainer.profiler) is type(profiler) and not isinstance(trainer.profiler, PassThroughProfiler)
    chosen = build(make_cfg([*SMOKE, "+trainer.profiler=simple"], tmp_path)).trainer(logger=False)
    assert isinstance(chosen.profiler, SimpleProfiler)
    # what it saves: the Python calls of Lightning's default around one hook call
    assert python_calls(lambda: PassThroughProfiler().profile("x").__enter__()) > python_calls(
        lambda: profiler.profile("x").__enter__()
    )


def test_suggest_draws_a_trial_value_from_a_distribution_object():
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper", reason="optional extra: pip install -e '.[optuna]'")
    import optuna

    distributions, _ = compat.optuna_params(["dropout.p=interval(0.05, 0.8)", "dropout.block_size=choice(3, 5)"])
    trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0)).ask()
    p, block = (compat.suggest(trial, key, distributions[key]) for key in ("dropout.p", "dropout.block_size"))
    assert 0.05 <= p <= 0.8 and block in (3, 5) and trial.params == {"dropout.p": p, "dropout.block_size": block}


def test_execute_job_calls_the_joblib_launchers_runner_with_the_same_arguments():
    import inspect

    from hydra_plugins.hydra_joblib_launcher import _core

    assert list(inspect.signature(compat.execute_job).parameters) == list(
        inspect.signature(_core.execute_job).parameters
    )
    # run for real by every gpu_pool sweep (tests/test_faults.py, tests/test_sweeps.py)
