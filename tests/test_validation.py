"""Bad input is refused before anything is built, printed once in a few lines naming the key, the
value and what is allowed; every job that starts writes metrics.json (src/dropout_lab/validate.py,
src/dropout_lab/errors.py). The CLI cases run the real ``python train.py`` and must fail in seconds."""

from __future__ import annotations

import fcntl
import json
import math
import pickle
import re
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from conftest import CONF, DATA_ROOT, SMOKE, make_cfg, run_cli
from dropout_lab.errors import ConfigError
from dropout_lab.summary import build_summary
from dropout_lab.train import train
from dropout_lab.validate import RANGES, check_idx_files, exactly, integer, leaves, number, range_for, validate

MAX_LINES = 15
GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name not in ("hydra", "base")
)  # base: shared bases, not a group


def options(group: str) -> list[str]:
    """Every option of a config group, nested ones (experiment/seed003/...) included; ``_*`` partials skipped."""
    return sorted(
        p.relative_to(CONF / group).with_suffix("").as_posix()
        for p in (CONF / group).rglob("*.yaml")
        if not p.name.startswith("_")
    )


def composed() -> list[tuple[str, dict]]:
    """(``group=option``, resolved config without ``hydra``) for every option of every group; the
    Hydra config is set while resolving, for ``${hydra:...}`` interpolations (logger run names)."""
    out = []
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        try:
            for group in GROUPS:
                for option in options(group):
                    cfg = compose(
                        "config",
                        overrides=[f"data_root={DATA_ROOT}", "output_dir=/tmp/unused", f"{group}={option}"],
                        return_hydra_config=True,
                    )
                    HydraConfig.instance().set_config(cfg)
                    with open_dict(cfg):
                        del cfg["hydra"]
                    out.append((f"{group}={option}", OmegaConf.to_container(cfg, resolve=True)))
        finally:
            HydraConfig.instance().cfg = None
    return out


@pytest.fixture(scope="module")
def every_option():
    return composed()


def test_every_numeric_key_in_conf_has_a_range(every_option):
    """A new numeric key in conf/ without an entry in validate.RANGES (or, under dropout, in its method's spec)
    fails here."""
    missing = {
        (key, name)
        for name, cfg in every_option
        for key, value in leaves(cfg)
        if isinstance(value, (int, float))
        and not isinstance(value, bool)
        and range_for(key, cfg["dropout"]["name"]) is None
    }
    assert len(every_option) > 40 and not missing, sorted(missing)


def test_every_shipped_option_passes_validation(every_option):
    for name, cfg in every_option:
        validate(OmegaConf.create(cfg))  # raises ConfigError naming the key


@pytest.mark.parametrize(
    "check,good,bad",
    [
        (number(0, 1, high_open=True), [0, 0.5, 0.999], [1, 1.0, -0.1, "abc", None, True, math.nan]),
        (number(0, low_open=True), [1e-9, 3, 1e9], [0, -1, math.inf, "0.1"]),
        (integer(1), [1, 2**40], [0, 1.0, True, "1", None]),
        (exactly(-1, "no limit") | integer(1), [-1, 5], [-1.0, 0, -2]),
        (exactly(None, "default") | integer(0), [None, 0], ["null", -1]),
    ],
)
def test_checks_accept_and_refuse(check, good, bad):
    assert all(check.ok(v) for v in good) and not any(check.ok(v) for v in bad)


def test_check_phrases():
    assert range_for("dropout.p", "standard").wants == "a number in [0, 1)"
    assert range_for("dropout.p", "concrete").wants == "a number in (0, 1)"
    assert RANGES["optimizer.lr"].wants == "a number > 0"
    assert RANGES["trainer.max_steps"].wants == "-1 (no step limit) or an integer >= 1"
    assert range_for("model.hidden_sizes.1") is RANGES["model.hidden_sizes"]
    assert range_for("dataset.subset.train") is RANGES["dataset.subset"] and range_for("dataset.no_such_key") is None


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["model=mlp", "model.hidden_sizes=[800,0]"], "model.hidden_sizes.1=0: must be an integer >= 1"),
        (["dataset.subset={train: 0}"], "dataset.subset.train=0: must be null (the whole split) or an integer >= 1"),
        (["optimizer=sgd", "optimizer.momentum=1"], "optimizer.momentum=1: must be a number in [0, 1)"),
        (["dropout=dropblock", "dropout.block_size=4"], "dropout.block_size=4: must be an odd integer >= 1"),
        (["dataset.download=yes"], "dataset.download='yes': must be true or false"),
        (
            ["trainer.limit_train_batches=0"],
            "trainer.limit_train_batches=0: must be null (every batch) or a number in (0, 1] or an integer >= 1",
        ),
    ],
)
def test_nested_and_other_keys_are_named_with_their_path(overrides, message, tmp_path):
    with pytest.raises(ConfigError) as err:
        validate(make_cfg(overrides, tmp_path))
    assert str(err.value) == message


def test_config_error_message_pickles_and_is_a_value_error():
    err = ConfigError("dropout.p", None, "must be a number in [0, 1)")
    assert str(err) == "dropout.p=null: must be a number in [0, 1)" and isinstance(err, ValueError)
    back = pickle.loads(pickle.dumps(err))  # joblib / submitit workers send it back to the launcher
    assert (back.key, back.value, back.fix, str(back)) == (err.key, err.value, err.fix, str(err))
    assert (
        str(ConfigError("seed", "x", "fix")) == "seed='x': fix"
        and str(ConfigError("seed", True, "fix")) == "seed=true: fix"
    )


@pytest.mark.parametrize("override", ["dropout.p=abc", "dropout.p=null", "seed=x"])
def test_summary_writer_survives_the_values_it_is_given(override, tmp_path):
    config = OmegaConf.to_container(make_cfg([override], tmp_path), resolve=True)
    summary = build_summary(config, "failed", None, {}, 0.0, error="x")
    assert summary["status"] == "failed" and summary["hparams"] == {}


@pytest.fixture
def truncated_mnist(tmp_path) -> Path:
    """A data root whose MNIST/raw holds the real files except a training-image file cut at 1 MB."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for real in (Path(DATA_ROOT) / "MNIST" / "raw").glob("*-ubyte"):
        (raw / real.name).symlink_to(real)
    (raw / "train-images-idx3-ubyte").unlink()
    (raw / "train-images-idx3-ubyte").write_bytes(
        (Path(DATA_ROOT) / "MNIST/raw/train-images-idx3-ubyte").read_bytes()[:1_000_000]
    )
    return tmp_path / "data"


def test_truncated_idx_file_is_named(truncated_mnist):
    check_idx_files(DATA_ROOT, "MNIST")  # the real files pass
    with pytest.raises(
        ConfigError, match=r"train-images-idx3-ubyte holds 1000000 bytes, its header \(60000x28x28\) needs 47040016"
    ):
        check_idx_files(str(truncated_mnist), "MNIST")
    (truncated_mnist / "MNIST/raw/t10k-labels-idx1-ubyte").unlink()
    (truncated_mnist / "MNIST/raw/t10k-labels-idx1-ubyte").write_bytes(b"\x89PNG garbage")
    (truncated_mnist / "MNIST/raw/train-images-idx3-ubyte").unlink()
    with pytest.raises(ConfigError, match="t10k-labels-idx1-ubyte is not an IDX file"):
        check_idx_files(str(truncated_mnist), "MNIST")
    (truncated_mnist / "MNIST/raw/t10k-labels-idx1-ubyte").write_bytes(b"\0\0\x08\x03\0\0")  # cut inside the header
    with pytest.raises(ConfigError, match=r"t10k-labels-idx1-ubyte holds 6 bytes, less than its 16-byte header"):
        check_idx_files(str(truncated_mnist), "MNIST")


# ---- through the real CLI: refused before training, printed once, in at most 15 lines ------------------

BAD_INPUTS = {  # override(s) -> the start of the one message line
    "batch_size": (["dataset.batch_size=0"], "dataset.batch_size=0: must be an integer >= 1"),
    "eval_batch_size": (["dataset.eval_batch_size=0"], "dataset.eval_batch_size=0: must be an integer >= 1"),
    "lr": (["optimizer.lr=-1"], "optimizer.lr=-1: must be a number > 0"),
    "weight_decay": (["optimizer.weight_decay=-1"], "optimizer.weight_decay=-1: must be a number >= 0"),
    "activation": (["model.activation=bogus"], "model.activation='bogus': must be one of relu, sigmoid, tanh"),
    "seed_negative": (["seed=-1"], "seed=-1: must be an integer in [0, 4294967295]"),
    "seed_string": (["seed=x"], "seed='x': must be an integer in [0, 4294967295]"),
    "max_epochs": (
        ["trainer.max_epochs=0"],
        "trainer.max_epochs=0: must be -1 (no epoch limit: trainer.max_steps bounds training) or an integer >= 1",
    ),
    "max_epochs_unbounded": (
        ["trainer.max_epochs=-1"],
        "trainer.max_epochs=-1: with trainer.max_steps=-1 training would never end",
    ),
    "best_without_validation": (
        ["keep_checkpoint=best", "trainer.limit_val_batches=0"],
        "keep_checkpoint='best': the best checkpoint is the epoch with the highest val/acc",
    ),
    "eval_best_without_validation": (
        ["eval.checkpoint=best", "trainer.limit_val_batches=0"],
        "eval.checkpoint='best': the best checkpoint",
    ),
    "sector_size": (
        ["dropout=sector", "dropout.sector_size=1000"],
        "dropout.sector_size=1000: must be at most 120, the units of site drop_fc1",
    ),
    "mc_samples": (["eval.mc_samples=-1"], "eval.mc_samples=-1: must be an integer >= 0"),
    "step_size": (["scheduler=step", "scheduler.step_size=0"], "scheduler.step_size=0: must be an integer >= 1"),
    "p_string": (["dropout.p=abc"], "dropout.p='abc': must be a number in [0, 1)"),
    "p_null": (["dropout.p=null"], "dropout.p=null: must be a number in [0, 1)"),
    "model_input": (
        ["model.in_channels=3"],
        "model='lenet5': cannot take dataset 'mnist' (inputs of shape (N, 1, 28, 28), 10 classes): ",
    ),
    # the rest of the class
    "image_too_small": (
        ["dataset.image_size=8"],
        "model='lenet5': cannot take dataset 'mnist' (inputs of shape (N, 1, 8, 8), 10 classes): ",
    ),
    "val_fraction": (["dataset.val_fraction=1.5"], "dataset.val_fraction=1.5: must be a number in [0, 1)"),
    "subset": (["dataset.subset=0"], "dataset.subset=0: must be null (the whole split) or an integer >= 1"),
    "image_size": (["dataset.image_size=0"], "dataset.image_size=0: must be null"),
    "std": (["dataset.std=[0]"], "dataset.std.0=0: must be a number > 0"),
    "cutout": (["dataset.augment={cutout: -1}"], "dataset.augment.cutout=-1: must be an integer >= 0"),
    "download": (["dataset.download=yes"], "dataset.download='yes': must be true or false"),
    "hidden_sizes": (["model=mlp", "model.hidden_sizes=[800,0]"], "model.hidden_sizes.1=0: must be an integer >= 1"),
    "pool": (["model.pool=min"], "model.pool='min': must be one of max, avg"),
    "stem": (["model=resnet18", "model.stem=tiny"], "model.stem='tiny': must be one of auto, cifar, imagenet"),
    "momentum": (["optimizer=sgd", "optimizer.momentum=1.5"], "optimizer.momentum=1.5: must be a number in [0, 1)"),
    "rho": (["optimizer=adadelta", "optimizer.rho=2"], "optimizer.rho=2: must be a number in [0, 1]"),
    "eps": (["optimizer=adadelta", "optimizer.eps=0"], "optimizer.eps=0: must be a number > 0"),
    "gamma": (["scheduler=step", "scheduler.gamma=0"], "scheduler.gamma=0: must be a number > 0"),
    "T_max": (["scheduler=cosine", "scheduler.T_max=0"], "scheduler.T_max=0: must be an integer >= 1"),
    "max_steps": (["trainer.max_steps=0"], "trainer.max_steps=0: must be -1 (no step limit) or an integer >= 1"),
    "limit_train_batches": (
        ["trainer.limit_train_batches=0"],
        "trainer.limit_train_batches=0: must be null (every batch) or a number in (0, 1]",
    ),
    "log_every_n_steps": (["trainer.log_every_n_steps=0"], "trainer.log_every_n_steps=0: must be an integer >= 1"),
    "p_one": (["dropout.p=1"], "dropout.p=1: must be a number in [0, 1)"),
    "p_negative": (["dropout.p=-0.1"], "dropout.p=-0.1: must be a number in [0, 1)"),
    "sites": (["dropout.sites=everywhere"], "dropout.sites='everywhere': must be one of fc, conv, all, default"),
    "block_size": (["dropout=dropblock", "dropout.block_size=4"], "dropout.block_size=4: must be an odd integer >= 1"),
    "num_states": (["dropout=edropout", "dropout.num_states=2"], "dropout.num_states=2: must be an integer >= 4"),
    "flip_factor": (["dropout=flipover", "dropout.flip_factor=0"], "dropout.flip_factor=0: must be a number > 0"),
    "seed_float": (["seed=1.5"], "seed=1.5: must be an integer"),
    "seed_bool": (["seed=true"], "seed=true: must be an integer"),
    "mc_samples_string": (["eval.mc_samples=x"], "eval.mc_samples='x': must be an integer >= 0"),
    "activation_samples": (
        ["callbacks=[default,activation_variance]", "callbacks.activation_variance.samples=0"],
        "callbacks.activation_variance.samples=0: must be an integer >= 1",
    ),
}

#: a method's own conditions, raised by its constructor before training (a ValueError naming the key),
#: reported as a ConfigError on ``dropout`` by dropout_lab.config.attach
METHOD_CHECKS = {
    "concrete_p0": (["dropout=concrete", "dropout.p=0"], "dropout.p=0"),
    "adaptive_range": (["dropout=adaptive", "dropout.rate_max=0.3"], "dropout.rate_max=0.3"),
    "shapley_batch": (["dropout=shapley", "dropout.max_batch=1"], "dropout.max_batch=1"),
    "dropblock_fc": (["dropout=dropblock", "dropout.sites=fc"], "dropout.sites=conv"),
    "squeezenet_fc": (["model=squeezenet1_1", "dropout.sites=fc"], "dropout.sites='fc'"),
    "dropconnect_inference": (["dropout=dropconnect", "dropout.inference=sample"], "dropout.inference='sample'"),
    "taylor_normalise": (["dropout=taylor", "dropout.normalise=bogus"], "dropout.normalise='bogus'"),
}


#: the cases whose printing path differs run through the CLI: a range, the values that crashed the
#: summary writer, checks raised while building (with a chained cause), and (below) a data file; the
#: other range cases take the same path as the first
CLI = ["batch_size", "p_string", "seed_string", "sector_size", "model_input"]


def assert_failed_summary(run: Path, message: str) -> None:
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["status"] == "failed" and message in summary["error"] and summary["history"] == []
    assert not (run / "checkpoints").exists()  # nothing trained


def test_a_subset_with_an_unknown_split_names_the_closest(tmp_path):
    """Before: {trian: 10} trained on the whole split."""
    with pytest.raises(ConfigError) as err:
        train(make_cfg(["dataset.subset={trian: 10}"], tmp_path))
    assert (
        str(err.value)
        == "dataset.subset.trian=10: unknown split; did you mean dataset.subset.train? the splits are train, val, test"
    )
    assert_failed_summary(tmp_path, "dataset.subset.trian=10")


def test_a_fixed_number_of_updates_is_accepted(tmp_path):
    """trainer.max_epochs=-1 with trainer.max_steps=N: Lightning's form of a fixed update budget."""
    metrics = train(
        make_cfg([*SMOKE, "trainer.max_epochs=-1", "trainer.max_steps=3", "trainer.limit_train_batches=null"], tmp_path)
    )
    summary = json.loads((tmp_path / "metrics.json").read_text())
    assert summary["status"] == "ok" and summary["history"][-1]["step"] == 3 and 0 < metrics["test/acc"] <= 1


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_value_is_refused_before_training_with_its_summary(case, tmp_path):
    args, message = BAD_INPUTS[case]
    with pytest.raises(ConfigError) as err:
        train(make_cfg([*SMOKE, *args], tmp_path))
    assert str(err.value).startswith(message)
    assert_failed_summary(tmp_path, message)


@pytest.mark.parametrize("case", METHOD_CHECKS)
def test_method_conditions_are_refused_before_training_with_their_summary(case, tmp_path):
    args, needle = METHOD_CHECKS[case]
    with pytest.raises(ConfigError, match=re.escape(needle)):
        train(make_cfg([*SMOKE, *args], tmp_path))
    assert_failed_summary(tmp_path, needle)


def test_a_method_condition_is_printed_once_in_few_lines(tmp_path):
    """A constructor's refusal takes the config-error path too (was a 30-line traceback)."""
    refused(
        METHOD_CHECKS["adaptive_range"][0],
        tmp_path,
        "dropout='adaptive': dropout.rate_min=0.0, dropout.p=0.5, dropout.rate_max=0.3: need 0 <= rate_min <= p <= rate_max < 1",
    )


def refused(args: list[str], tmp_path: Path, message: str) -> list[str]:
    """Run ``python train.py args`` into ``tmp_path/run``; assert it fails before training with
    ``message`` printed exactly once, no traceback, at most 15 lines, and a failed metrics.json.
    Returns the console lines."""
    run = tmp_path / "run"
    proc = run_cli([*SMOKE, f"hydra.run.dir={run}", *args], cwd=tmp_path)
    console = proc.stdout + proc.stderr
    lines = console.strip().splitlines()
    assert proc.returncode == 1, console[-3000:]
    assert console.count(message) == 1 and len(lines) <= MAX_LINES and "Traceback" not in console, console
    assert_failed_summary(run, message)
    return lines


@pytest.mark.parametrize("case", CLI)
def test_bad_value_is_printed_once_in_few_lines(case, tmp_path):
    args, message = BAD_INPUTS[case]
    refused(args, tmp_path, message)


def test_truncated_mnist_is_reported_as_truncated_not_missing(truncated_mnist, tmp_path):
    path = truncated_mnist / "MNIST" / "raw" / "train-images-idx3-ubyte"
    lines = refused(
        [f"data_root={truncated_mnist}"],
        tmp_path,
        f"{path} holds 1000000 bytes, its header (60000x28x28) needs 47040016: the file is truncated or corrupt",
    )
    assert not any("not found" in line for line in lines)


def test_full_traceback_only_with_hydra_full_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    proc = run_cli([*SMOKE, f"hydra.run.dir={tmp_path / 'run'}", "dataset.batch_size=0"], cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "validate(cfg)" in proc.stderr


def test_refused_multirun_jobs_write_their_summary(tmp_path, monkeypatch):
    """DDP inside a multirun (trainer.devices=2) and a gpu_pool slot held by another process (the
    job with trainer.devices=1): both fail before training, each with its metrics.json."""
    locks, sweep = tmp_path / "locks", tmp_path / "sweep"
    locks.mkdir()
    monkeypatch.setenv("DROPOUT_LAB_LOCK_DIR", str(locks))
    with open(locks / "dropout-lab-slot0-of1.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # as a running sweep's worker would
        proc = run_cli(
            [
                "-m",
                *SMOKE,
                f"hydra.sweep.dir={sweep}",
                "hydra/launcher=gpu_pool",
                "hydra.launcher.n_jobs=1",
                "trainer.accelerator=cpu",
                "trainer.devices=2,1",
            ],
            cwd=tmp_path,
        )
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = {
        json.loads(p.read_text())["config"]["trainer"]["devices"]: json.loads(p.read_text())
        for p in sweep.glob("*/metrics.json")
    }
    assert errors.keys() == {1, 2} and all(s["status"] == "failed" and not s["history"] for s in errors.values())
    assert (
        "trainer.devices=2: with trainer.strategy=auto trainer.num_nodes=1 asks for 2 processes" in errors[2]["error"]
    )
    assert "all 1 gpu_pool slots" in errors[1]["error"]
