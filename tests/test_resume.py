"""Resume that resumes: a job killed with SIGKILL (a real subprocess) and re-run with resume=true ends
with the same metrics as an uninterrupted run; checkpoints are atomic, loaded with weights_only=True;
finished jobs are neither retrained nor trusted when stale; one sweep per folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from benchlib import kill_when
from filelock import FileLock
from omegaconf import OmegaConf

from conftest import ROOT, SMOKE, make_cfg, run_cli, spawn
from dropout_lab import checkpoints
from dropout_lab.checkpoints import AtomicCheckpointIO, UnsafeCheckpointError, resume_from, safe_load
from dropout_lab.errors import ConfigError
from dropout_lab.job import Job, changed_keys
from dropout_lab.sweeplock import LOCK_FILE, FinishedJobError, SweepGuard
from dropout_lab.train import train
from dropout_lab.validate import validate

# 5 short epochs on tiny subsets, deterministic kernels (CPU)
FIVE = [*SMOKE, "trainer.max_epochs=5", "trainer.limit_train_batches=6", "deterministic=true", "checkpoint_every=0"]
COMPARED = (
    "test/acc",
    "test/loss",
    "test_best/acc",
    "test_best/loss",
    "val/acc",
    "val/loss",
    "val/acc_best",
    "train/loss",
    "dropout/drop_fraction",
)


def epochs_done(last: Path) -> int:
    """Training epochs a ``last.ckpt`` holds (0 if there is none yet)."""
    return safe_load(last)["epoch"] + 1 if last.exists() else 0


def history(job: Path) -> list[float]:
    return [e["val/acc"] for e in json.loads((job / "metrics.json").read_text())["history"]]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["standard", "concrete"])
def test_job_killed_after_epoch_2_of_5_resumes_to_the_uninterrupted_result(method, tmp_path, caplog):
    overrides = [*FIVE, f"dropout={method}", "scheduler=step", "scheduler.step_size=2"]
    reference = train(make_cfg(overrides, tmp_path / "uninterrupted"))

    job = tmp_path / "job"
    last = job / "checkpoints" / "last.ckpt"
    done = []
    proc = spawn([f"hydra.run.dir={job}", *overrides], tmp_path, capture=False)
    kill_when(proc, lambda: done.append(epochs_done(last)) or done[-1] >= 2)
    assert 2 <= epochs_done(last) < 5 and not (job / "metrics.json").exists()  # killed mid-run, with a checkpoint
    # the kill may land while best.ckpt (written right after last.ckpt) is being written: its temp file is
    # removed when the job resumes

    with caplog.at_level("INFO", logger="dropout_lab.train"):
        resumed = train(make_cfg([*overrides, "resume=true"], job))
    assert f"resume: continuing from {last}" in caplog.text
    assert not list(job.rglob("*.tmp"))
    assert {k: resumed[k] for k in COMPARED} == {k: reference[k] for k in COMPARED}
    assert history(job) == history(tmp_path / "uninterrupted") and len(history(job)) == 5
    if method == "concrete":  # the learned p came back from the checkpoint and went on learning the same way
        assert resumed["dropout/drop_fc1/p"] == reference["dropout/drop_fc1/p"] != 0.1


@pytest.mark.slow
def test_job_killed_before_its_first_checkpoint_starts_over_to_the_same_result(tmp_path):
    overrides = [*FIVE, "dropout=standard"]
    job = tmp_path / "job"
    kill_when(spawn([f"hydra.run.dir={job}", *overrides], tmp_path, capture=False), lambda: list(job.glob("events.*")))
    assert not (job / "checkpoints" / "last.ckpt").exists()
    resumed = train(make_cfg([*overrides, "resume=true"], job))
    reference = train(make_cfg(overrides, tmp_path / "uninterrupted"))
    assert {k: resumed[k] for k in COMPARED} == {k: reference[k] for k in COMPARED}


SAVE_BIG = """
import sys, torch
from dropout_lab.checkpoints import AtomicCheckpointIO
AtomicCheckpointIO().save_checkpoint({"w": torch.zeros(100_000_000)}, sys.argv[1])  # 400 MB: a wide window for the kill
"""


def test_a_kill_during_a_checkpoint_write_leaves_the_old_file_and_nothing_in_tmpdir(tmp_path):
    """SIGKILL a process while it writes a 400 MB checkpoint: the previous ``last.ckpt`` is whole, no
    temporary file is left in $TMPDIR (Lightning's fsspec transaction writes its temp file there, often
    /dev/shm), and the one left in the job folder is removed at the next start."""
    tmpdir, folder = tmp_path / "tmpdir", tmp_path / "checkpoints"
    tmpdir.mkdir()
    path = folder / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"w": torch.ones(3)}, path)
    env = {**os.environ, "TMPDIR": str(tmpdir), "PYTHONPATH": str(ROOT / "src")}
    proc = subprocess.Popen([sys.executable, "-c", SAVE_BIG, str(path)], env=env)

    # checkpoint data only: libraries make cache folders and small, short-lived temp files in $TMPDIR at import
    def data(folder: Path) -> list[Path]:
        found = []
        for p in folder.iterdir():
            try:
                if p.is_file() and p.stat().st_size > 1 << 20:
                    found.append(p)
            except FileNotFoundError:  # deleted between the listing and the stat
                pass
        return found

    writing = lambda: [p for p in [*data(tmpdir), *data(folder)] if p != path]  # noqa: E731
    deadline = time.time() + 120
    while not writing() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.001)
    proc.kill()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the write ended before it could be killed"
    assert data(tmpdir) == []  # no checkpoint data left in $TMPDIR
    assert torch.equal(safe_load(path)["w"], torch.ones(3))
    assert resume_from(folder, resume=True) == path and [p.name for p in folder.iterdir()] == ["last.ckpt"]


class Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_last_ckpt_is_refused_and_runs_nothing(tmp_path):
    marker, job = tmp_path / "pwned", tmp_path / "job"
    (job / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {}, "epoch": 1, "payload": Exploit(marker)}, job / "checkpoints" / "last.ckpt")
    with pytest.raises(
        UnsafeCheckpointError, match="refusing to load .*last.ckpt.*refused GLOBAL posix.system.*delete the file"
    ):
        train(make_cfg([*SMOKE, "resume=true"], job))
    assert not marker.exists()
    summary = json.loads((job / "metrics.json").read_text())
    assert summary["status"] == "failed" and "refusing to load" in summary["error"]
    torch.load(job / "checkpoints" / "last.ckpt", weights_only=False)  # the file really is an exploit
    assert marker.exists()


def test_a_finished_job_is_not_retrained_nor_trusted_when_its_config_changed(tmp_path, caplog):
    job = tmp_path / "job"
    cfg = make_cfg([*SMOKE, "keep_checkpoint=last"], job)
    first = train(cfg)
    before = ((job / "metrics.json").read_bytes(), (job / "metrics.json").stat().st_mtime_ns)
    with pytest.raises(FinishedJobError, match="resume=true.*fresh hydra.sweep.dir"):
        train(cfg)  # without resume=true: refused, nothing overwritten
    moved = make_cfg([*SMOKE, "keep_checkpoint=last", "resume=true"], job)
    OmegaConf.update(moved, "data_root", "/elsewhere", force_add=True)  # moving the data is no change
    with caplog.at_level("INFO", logger="dropout_lab.sweeplock"):
        assert train(moved) == first
    assert "skipped" in caplog.text
    changed = make_cfg([*SMOKE, "keep_checkpoint=last", "resume=true"], job)
    OmegaConf.update(changed, "optimizer.lr", 0.5)  # as a changed default in conf/ would
    with pytest.raises(FinishedJobError, match=r"optimizer.lr: 0.001 -> 0.5"):
        train(changed)
    assert ((job / "metrics.json").read_bytes(), (job / "metrics.json").stat().st_mtime_ns) == before
    assert changed_keys(
        {"a": {"b": 1}, "data_root": "/x", "dataset": {"root": "/x"}, "trainer": {"devices": [1]}},
        {"a": {"b": 2}, "data_root": "/y", "dataset": {"root": "/y"}, "trainer": {"devices": 1}, "c": 0},
    ) == ["a.b", "c"]


def test_a_second_sweep_into_a_busy_folder_refuses(tmp_path):
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    with FileLock(sweep / LOCK_FILE):  # a sweep is running there (held by this process)
        proc = run_cli(["-m", f"hydra.sweep.dir={sweep}", *SMOKE, "seed=0,1"], cwd=tmp_path)
    assert proc.returncode != 0 and "in use by another running sweep" in proc.stderr, proc.stderr[-2000:]
    assert sorted(p.name for p in sweep.iterdir()) == [LOCK_FILE]  # no job started
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}, "resume": False})
    guard = SweepGuard()
    guard.on_multirun_start(config)
    with pytest.raises(SystemExit, match=f"hydra.sweep.dir={sweep} is in use"):
        SweepGuard().on_multirun_start(config)
    guard.on_multirun_end(config)
    SweepGuard().on_multirun_start(config)  # free again


def test_a_sweep_into_a_folder_with_finished_jobs_needs_resume(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra.sweep.dir={sweep}", *SMOKE, "seed=0"]
    assert run_cli(args, cwd=tmp_path).returncode == 0
    (summary,) = sweep.glob("*/metrics.json")
    before = (summary.read_bytes(), summary.stat().st_mtime_ns)
    again = run_cli([*args, "seed=0,1"], cwd=tmp_path)
    assert again.returncode != 0 and "holds 1 finished job(s)" in again.stderr
    assert "resume=true" in again.stderr and "fresh hydra.sweep.dir" in again.stderr
    assert len(list(sweep.glob("*/.hydra"))) == 1 and (summary.read_bytes(), summary.stat().st_mtime_ns) == before
    # (with resume=true the same command runs: test_sweeps.py::test_killed_sweep_resumes_without_rerunning_finished_jobs)


def test_concurrent_summary_writes_never_collide(tmp_path):
    """Two writers of one job folder (the race of two sweeps) each go through their own temp file."""
    errors = []

    def write(n: int) -> None:
        for i in range(100):
            try:
                Job(tmp_path).write({"status": "ok", "writer": n, "i": i})
            except OSError as err:
                errors.append(err)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and json.loads((tmp_path / "metrics.json").read_text())["status"] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_keep_checkpoint_policy(tmp_path):
    with pytest.raises(ConfigError, match=r"keep_checkpoint=true: must be none \(delete both after the job\) or last"):
        validate(make_cfg(["keep_checkpoint=true"], tmp_path))
    with pytest.raises(ConfigError, match=r"eval.checkpoint='first': must be last \(the final epoch's weights\)"):
        validate(make_cfg(["eval.checkpoint=first"], tmp_path))
    for keep, left in (("none", []), ("last", ["last.ckpt"]), ("best", ["best.ckpt"])):
        for name in ("last", "best"):
            (tmp_path / f"{name}.ckpt").write_bytes(b"")
        checkpoints.finish(tmp_path, keep)
        assert sorted(p.name for p in tmp_path.iterdir()) == left


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_summaries_and_checkpoints_get_the_umask_mode(umask, tmp_path):
    """metrics.json and last.ckpt are written through owner-only temp files; they end with the mode every other
    file of the job folder gets (was 600: another user's report listed the jobs as unreadable)."""
    old = os.umask(umask)
    try:
        train(make_cfg([*SMOKE, "keep_checkpoint=last"], tmp_path))
    finally:
        os.umask(old)
    for path in (tmp_path / "metrics.json", tmp_path / "checkpoints" / "last.ckpt", tmp_path / "predictions.npz"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path
