"""Sweeps end to end: joblib pool, kill and resume, failure isolation, report, TensorBoard HParams,
Slurm launcher config, the DDP-in-multirun refusal, MC dropout and activation variance."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from benchlib import kill_when
from hydra import compose, initialize_config_dir

from conftest import CONF, make_cfg, run_cli, spawn
from dropout_lab.job import folder_name
from dropout_lab.launch import check_multirun, requested_processes
from dropout_lab.report import write_report
from dropout_lab.train import train

TINY = ["trainer=smoke", "dataset.subset={train: 256, val: 128, test: 128}", "dataset.batch_size=64"]


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def test_a_presets_sweep_folder_is_derived_from_its_name():
    """One rule in conf/config.yaml (no experiment sets its own hydra.sweep.dir): a preset's sweep goes to
    outputs/multirun/<experiment>/<date_time>, any other to outputs/multirun/<date>/<time>."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for overrides, pattern in (
            ([], r"outputs/multirun/\d{4}-\d\d-\d\d/\d\d-\d\d-\d\d-\d{6}$"),
            (["experiment=dropout_zoo"], r"outputs/multirun/dropout_zoo/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d$"),
            (["experiment=seed003_mlp"], r"outputs/multirun/seed003_mlp/\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d$"),
        ):
            cfg = compose("config", overrides=overrides, return_hydra_config=True)
            assert re.match(pattern, cfg.hydra.sweep.dir), cfg.hydra.sweep.dir
    assert not [p.name for p in (CONF / "experiment").rglob("*.yaml") if "sweep:\n    dir:" in p.read_text()]


def test_folder_name_is_stable_unique_and_flat():
    a = folder_name(["seed=1", "dropout.p=0.5", "dropout=standard"])
    assert a == folder_name(["dropout=standard", "dropout.p=0.5", "seed=1", "resume=true"])  # order, resume neutral
    assert a.startswith("dropout=standard,dropout.p=0.5,seed=1-")
    # differ only in an excluded key: same readable part, different hash
    b, c = (folder_name(["dropout=none", f"optimizer.lr={lr}"], ["optimizer.lr"]) for lr in (0.1, 0.2))
    assert b != c and b.split("-")[0] == c.split("-")[0]
    assert "/" not in folder_name(["+experiment/seed003=relu", "data_root=/x/y", "dataset.subset={train: 8}"])


@pytest.mark.slow
def test_joblib_pool_sweep_with_a_failing_job_and_report(tmp_path):
    """4 jobs on 2 loky workers; the p=1.5 jobs fail, the others finish; report and HParams."""
    sweep = tmp_path / "sweep"
    proc = run_cli(
        [
            "-m",
            "hydra/launcher=gpu_pool",
            "hydra.launcher.n_jobs=2",
            f"hydra.sweep.dir={sweep}",
            *TINY,
            "dropout=standard",
            "dropout.p=0.3,1.5",
            "seed=0,1",
        ],
        cwd=tmp_path,
    )
    assert (
        proc.returncode != 0 and "dropout.p=1.5: must be a number in [0, 1)" in proc.stderr
    )  # the multirun reports the failure
    runs = summaries(sweep)
    assert len(runs) == 4
    status = {(s["hparams"]["p"], s["hparams"]["seed"]): s["status"] for s in runs.values()}
    assert status == {(0.3, 0): "ok", (0.3, 1): "ok", (1.5, 0): "failed", (1.5, 1): "failed"}
    slots = {
        line.split("'slot': ")[1][0]
        for s in sweep.glob("*/train.log")
        for line in s.read_text().splitlines()
        if "placement" in line
    }
    assert slots <= {"0", "1"} and len(slots) >= 1
    ok = [s for s in runs.values() if s["status"] == "ok"]
    assert all(0.0 < s["test_acc"] <= 1.0 and s["history"] for s in ok)

    paths = write_report(sweep)
    md = (sweep / "report.md").read_text()
    accs = sorted(100 * s["test_acc"] for s in ok)
    mean = sum(accs) / 2
    assert (
        f"| standard | 0.3 | 2 | {mean:.2f} ± " in md
    )  # no tuning seeds: every seed evaluates, mean ± CI over the two
    assert "nothing is selected and every seed is an evaluation replicate" in md  # one configuration per method
    assert md.count("**failed**") == 2 and "dropout.p=1.5: must be a number in [0, 1)" in md
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 2 and rows[1].startswith("mnist,lenet5,,standard,,0.3,2,")
    assert (
        sweep / "acc_vs_rate_mnist_lenet5.png" not in paths
    )  # one method at one rate: nothing to plot against the rate
    for name in ("leaderboard_mnist_lenet5.png", "val_acc_mnist_lenet5.png", "val_loss_mnist_lenet5.png"):
        png = sweep / name
        assert png in paths and png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 5000

    # TensorBoard HParams: same keys in both finished runs, real metric values
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    keys, accs_tb = [], []
    for folder in (sweep / name for name, s in runs.items() if s["status"] == "ok"):
        acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        data = HParamsPluginData.FromString(acc.summary_metadata["_hparams_/session_start_info"].plugin_data.content)
        keys.append(sorted(data.session_start_info.hparams))
        accs_tb.append(acc.Scalars("test/acc")[-1].value)
        assert acc.Scalars("hp_metric")[-1].value > 0.0 and "test/mc_acc" not in acc.Tags()["scalars"]
    assert keys[0] == keys[1] and {
        "method",
        "p",
        "model",
        "dataset",
        "seed",
        "optimizer",
        "lr",
        "weight_decay",
        "epochs",
    } <= set(keys[0])
    assert sorted(round(100 * a, 4) for a in accs_tb) == pytest.approx(accs, abs=1e-3)


@pytest.mark.slow
def test_killed_sweep_resumes_without_rerunning_finished_jobs(tmp_path):
    """SIGKILL a 3-job sweep while job 2 is mid-training; re-run with resume=true."""
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        f"hydra.sweep.dir={sweep}",
        *TINY,
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
        "checkpoint_every=0",
        "dropout=standard",
        "seed=0,1,2",
    ]
    ckpts = []

    def mid_job() -> bool:  # one job finished, another with a checkpoint and no summary yet
        ckpts[:] = [c for c in sweep.glob("*/checkpoints/last.ckpt") if not (c.parent.parent / "metrics.json").exists()]
        return bool(ckpts and list(sweep.glob("*/metrics.json")))

    kill_when(spawn(args, tmp_path, capture=False), mid_job)
    (first,) = sweep.glob("*/metrics.json")
    before = (first.read_bytes(), first.stat().st_mtime_ns)
    killed = ckpts[0].parent.parent

    again = run_cli([*args, "resume=true"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert (first.read_bytes(), first.stat().st_mtime_ns) == before  # finished job skipped, summary untouched
    runs = summaries(sweep)
    assert len(runs) == 3 and all(s["status"] == "ok" and s["epochs"] == 2 for s in runs.values())
    log = (killed / "train.log").read_text()
    assert "resume: continuing from" in log and "skipped" not in log
    assert [e["epoch"] for e in runs[killed.name]["history"]] == [0, 1]
    assert all("val/acc" in e for e in runs[killed.name]["history"])  # the epoch before the kill kept its metrics
    assert not list(sweep.glob("*/checkpoints/last.ckpt"))  # finished jobs keep no checkpoint
    write_report(sweep)
    with open(sweep / "jobs.csv") as f:
        jobs = list(csv.DictReader(f))
    assert len(jobs) == 3 and len({j["folder"] for j in jobs}) == 3 and {j["status"] for j in jobs} == {"ok"}


@pytest.mark.slow
def test_ddp_in_a_multirun_is_refused_before_training(tmp_path):
    proc = run_cli(
        [
            "-m",
            f"hydra.sweep.dir={tmp_path / 's'}",
            *TINY,
            "trainer.accelerator=cpu",
            "trainer.devices=2",
            "+trainer.strategy=ddp",
            "seed=0",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode != 0
    assert "asks for 2 processes inside a Hydra multirun" in proc.stderr
    assert not list((tmp_path / "s").glob("*/checkpoints"))  # nothing trained
    assert requested_processes({"devices": 1}) == 1 and requested_processes({"devices": [0, 1]}) == 2
    assert requested_processes({"devices": 1, "strategy": "ddp"}) == 2 and requested_processes({"devices": "3"}) == 3
    check_multirun(make_cfg(["trainer.devices=1"], tmp_path))  # one device is fine


def test_slurm_launcher_composes_with_one_gpu_per_job(tmp_path, monkeypatch):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes, launcher.partition) == (1, 1, 1, "gpu")
    assert launcher.timeout_min == 60 and launcher.mem_gb == 16 and launcher.cpus_per_task == 4
    # the sbatch file submitit would submit (the launcher prefixes non-base keys with "slurm_")
    import submitit
    from omegaconf import OmegaConf

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    params = {
        k: v
        for k, v in OmegaConf.to_container(launcher, resolve=False).items()
        if k not in ("_target_", "submitit_folder", "max_num_timeout")
    }
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))  # no srun on this machine
    executor = submitit.AutoExecutor(folder=tmp_path, cluster="slurm")
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    text = executor._executor._make_submission_file_text("python train.py", "0")
    for line in (
        "#SBATCH --gpus-per-node=1",
        "#SBATCH --ntasks-per-node=1",
        "#SBATCH --partition=gpu",
        "#SBATCH --time=60",
        "#SBATCH --mem=16GB",
        "#SBATCH --cpus-per-task=4",
    ):
        assert line in text


@pytest.mark.slow
def test_mc_dropout_and_activation_variance_in_summary(tmp_path):
    # also: resume=true with a truncated last.ckpt (kill -9 while it was written) starts from scratch
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04truncated")
    cfg = make_cfg(
        [
            *TINY,
            "dropout=standard",
            "dropout.p=0.5",
            "eval.mc_samples=4",
            "callbacks=[default,activation_variance]",
            "resume=true",
        ],
        tmp_path,
    )
    metrics = train(cfg)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("test/loss", "test/ece", "test/brier", "test/mc_acc", "test/mc_nll", "test/mc_ece", "test/mc_brier"):
        assert 0.0 <= summary["metrics"][key] < 10.0 and metrics[key] == summary["metrics"][key]
    assert summary["metrics"]["test/mc_nll"] != summary["metrics"]["test/loss"]  # the 4 passes were stochastic
    last = summary["history"][-1]
    for site in ("drop_conv1", "drop_conv2", "drop_fc1", "drop_fc2"):
        assert last[f"actvar/{site}/var"] > 0.0 and last[f"actvar/{site}/unit_var"] > 0.0
        assert last[f"actvar/{site}/unit_var"] <= last[f"actvar/{site}/var"] * 1.0001  # within-unit <= total variance


SEED003 = {  # variant: (hidden sizes, activation, input dropout, hidden dropout, method, p, anchor)
    "logistic_2x100": ([100, 100], "sigmoid", False, "all", "none", 0.0, 0.9757),
    "logistic_2x800": ([800, 800], "sigmoid", False, "all", "none", 0.0, 0.9808),
    "logistic_3x1024_p05": ([1024] * 3, "sigmoid", False, "all", "standard", 0.5, 0.9816),
    "relu_3x1024_p05": ([1024] * 3, "relu", False, "all", "standard", 0.5, 0.9756),
    "relu_2x256_input_first_p03": ([256, 256], "relu", True, "first", "standard", 0.3, 0.9818),
}


@pytest.mark.parametrize("variant", sorted(SEED003))
def test_seed003_presets_compose_to_the_five_configs(variant, tmp_path):
    cfg = make_cfg(["experiment=seed003_mlp", f"+experiment/seed003={variant}"], tmp_path)
    m = cfg.model
    got = (
        list(m.hidden_sizes),
        m.activation,
        m.input_dropout,
        m.hidden_dropout,
        cfg.dropout.name,
        cfg.dropout.p,
        cfg.anchor,
    )
    assert got == SEED003[variant]
    assert (cfg.optimizer.lr, cfg.dataset.batch_size, cfg.trainer.max_epochs, cfg.dataset.name) == (
        1e-3,
        32,
        10,
        "mnist",
    )
    assert sorted(p.stem for p in (CONF / "experiment" / "seed003").glob("*.yaml")) == sorted(SEED003)
