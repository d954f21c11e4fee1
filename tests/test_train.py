"""Real training on tiny subsets of the real MNIST files, through the composed configs."""

import ast
import json

import pytest
from hydra.errors import MissingConfigException
from omegaconf import open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import ROOT, SMOKE, make_cfg, run_cli
from dropout_lab.config import build, settings
from dropout_lab.errors import ConfigError
from dropout_lab.summary import History
from dropout_lab.train import fit, train

#: the modules that read a composed job config (Hydra's API hands them one, or they turn it into objects);
#: every other module of the package gets objects (docs/usage.md, "From config to objects")
READS_CONFIG = {
    "config",
    "train",
    "validate",
    "job",
    "dedup",
    "launch",
    "pool",
    "sweeplock",
    "retest",
    "tuning",
    "loggers",
    "callbacks",
}


@pytest.mark.parametrize("model", ["lenet5", "mlp"])
def test_smoke_run_learns_and_writes_events_and_summary(model, tmp_path):
    cfg = make_cfg([*SMOKE, f"model={model}", "trainer.max_epochs=3"], tmp_path)
    metrics = train(cfg)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    losses = [epoch["train/loss"] for epoch in summary["history"]]
    assert summary["status"] == "ok" and summary["epochs"] == 3
    assert losses[-1] < losses[0], losses
    assert summary["test_acc"] == pytest.approx(metrics["test/acc"]) and 0.0 <= summary["test_acc"] <= 1.0
    assert summary["train_samples_per_s"] > 0 and summary["drop_fraction"] is not None
    assert list(tmp_path.glob("events.out.tfevents.*"))
    # the HParams session carries the real best validation accuracy, not the -1 placeholder
    events = EventAccumulator(str(tmp_path), size_guidance={"scalars": 0})
    events.Reload()
    assert events.Scalars("hp_metric")[-1].value == pytest.approx(metrics["val/acc_best"])
    assert events.Scalars("test/acc")[-1].value == pytest.approx(metrics["test/acc"])
    assert "_hparams_/session_start_info" in events.summary_metadata


def test_mnist_lenet5_reaches_a_real_accuracy(tmp_path):
    """Two epochs on 20k real training images (312 steps of 128): bar 95% test accuracy."""
    cfg = make_cfg(
        [
            "dataset.subset={train: 20000, val: 1000, test: 2000}",
            "trainer.max_epochs=2",
            "trainer.enable_progress_bar=false",
            "trainer.accelerator=cpu",
        ],
        tmp_path,
    )
    assert train(cfg)["test/acc"] >= 0.95


def test_same_seed_gives_identical_metrics_with_deterministic(tmp_path):
    runs = [train(make_cfg([*SMOKE, "deterministic=true", "seed=7"], tmp_path / str(i))) for i in range(2)]
    assert runs[0] == runs[1]
    other = train(make_cfg([*SMOKE, "deterministic=true", "seed=8"], tmp_path / "other"))
    assert other["train/loss"] != runs[0]["train/loss"]


def test_threads_sets_torch_threads_in_a_single_run(tmp_path, monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    train(make_cfg([*SMOKE, "trainer.max_epochs=1", "threads=1"], tmp_path))
    assert calls[:1] == [1]


@pytest.mark.parametrize("p", [1.0, -0.1, 1.5])
def test_p_outside_unit_interval_is_refused_before_training(p, tmp_path):
    with pytest.raises(ValueError, match=r"dropout\.p=.*: must be a number in \[0, 1\)"):
        train(make_cfg([*SMOKE, f"dropout.p={p}"], tmp_path))
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["status"] == "failed" and "must be a number in [0, 1)" in summary["error"] and not summary["history"]


def test_missing_dataset_names_the_paths_and_data_root(tmp_path):
    cfg = make_cfg([*SMOKE, f"data_root={tmp_path / 'nowhere'}", "dataset.download=false"], tmp_path / "run")
    with pytest.raises(ConfigError) as err:
        train(cfg)
    message = str(err.value)
    assert str(tmp_path / "nowhere" / "MNIST" / "raw" / "train-images-idx3-ubyte") in message
    assert "data_root" in message and "DROPOUT_LAB_DATA" in message


@pytest.mark.parametrize(
    "group,bad", [("optimizer", "rmsprop_typo"), ("dropout", "no_such_method"), ("model", "vgg99")]
)
def test_unknown_option_lists_the_allowed_values(group, bad, tmp_path):
    with pytest.raises(MissingConfigException) as err:
        make_cfg([f"{group}={bad}"], tmp_path)
    assert f"Could not find '{group}/{bad}'" in str(err.value) and "Available options" in str(err.value)


@pytest.mark.parametrize("override,needle", [("model.in_channels=3", "channels"), ("dataset.image_size=8", "12x12")])
def test_model_that_cannot_take_the_input_fails_before_training(override, needle, tmp_path):
    with pytest.raises(ValueError, match=r"model='lenet5': cannot take dataset 'mnist'") as err:
        train(make_cfg([*SMOKE, override], tmp_path))
    assert needle in str(err.value)


def test_bad_sites_value_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"dropout\.sites='everywhere': must be one of fc, conv, all, default"):
        train(make_cfg([*SMOKE, "dropout.sites=everywhere"], tmp_path))


@pytest.mark.slow
def test_two_job_multirun_writes_one_folder_and_summary_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    result = run_cli(["-m", "dropout=none,standard", f"hydra.sweep.dir={sweep}", *SMOKE], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted(sweep.glob("*/metrics.json"))
    assert len(summaries) == 2
    methods = {json.loads(s.read_text())["hparams"]["method"] for s in summaries}
    assert methods == {"none", "standard"}
    assert all(list(s.parent.glob("events.out.tfevents.*")) for s in summaries)


def test_a_job_trains_on_its_objects_after_its_config_is_gone(tmp_path):
    """The config becomes objects once, at the top (dropout_lab.config): after settings() and build(), emptying
    the config changes nothing; fit() and the layers under it never read it."""
    cfg = make_cfg([*SMOKE, "trainer.max_epochs=2", "eval.mc_samples=2", "logger=csv"], tmp_path)
    job, parts = settings(cfg), build(cfg)
    with open_dict(cfg):
        cfg.clear()
    metrics = fit(job, parts, History())
    assert metrics["test/acc"] > 0.2 and "test/mc_acc" in metrics  # chance is 0.1; and parts.module.current_epoch == 2
    assert job.test_on == "last" and job.keep_checkpoint == "none" and job.config["dropout"]["name"] == "standard"


def test_only_the_top_of_a_job_imports_omegaconf():
    """A lower layer (checkpoints, summary, hparams, module, controller, analysis, the methods, models and data)
    never holds the config: none of its modules imports omegaconf."""
    package = ROOT / "src" / "dropout_lab"
    readers = set()
    for path in package.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        if any(name.split(".")[0] == "omegaconf" for name in names):
            readers.add(path.relative_to(package).with_suffix("").as_posix())
    assert readers <= READS_CONFIG, sorted(readers - READS_CONFIG)
