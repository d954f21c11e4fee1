"""Faults a cluster user meets, each tried for real in a subprocess: signals that report themselves (exit
status 128 + signal, an ``interrupted`` summary, a closing line that counts every job and names the resume
command), a killed ``gpu_pool`` worker that costs one job, a killed launcher that leaves no orphans, a full
disk reported by its cause, and bad input refused in its own job or before anything runs."""

from __future__ import annotations

import csv
import fcntl
import json
import os
import resource
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from benchlib import wait_for

from conftest import ROOT, cli_env, run_cli, spawn
from dropout_lab.checkpoints import safe_load
from dropout_lab.pool import alive, worker_pids
from dropout_lab.report import write_report

TINY = [
    "trainer=smoke",
    "dataset.subset={train: 256, val: 128, test: 128}",
    "dataset.batch_size=64",
    "trainer.limit_train_batches=4",
]
#: long enough to be caught mid-job: 25 short epochs
LONG = [*TINY, "trainer.max_epochs=25", "checkpoint_every=0"]
OOM = "worker killed by signal 9 (SIGKILL); likely out of memory (the kernel's OOM killer sends SIGKILL)"


def in_training(sweep: Path, n: int = 1) -> list[Path]:
    """Job folders of ``sweep`` with a checkpoint and no summary yet (at least one epoch done, not finished)."""
    jobs = [
        c.parent.parent
        for c in sweep.glob("*/checkpoints/last.ckpt")
        if not (c.parent.parent / "metrics.json").exists()
    ]
    return jobs if len(jobs) >= n else []


def summary(job: Path) -> dict:
    return json.loads((job / "metrics.json").read_text())


def closing(stdout: str) -> str:
    return [line for line in stdout.splitlines() if line.strip()][-1]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_signalled_run_exits_128_plus_the_signal_with_an_interrupted_summary(sig, tmp_path):
    run = tmp_path / "run"
    args = [*LONG, f"hydra.run.dir={run}", "deterministic=true"]
    proc = spawn(args, tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    wait_for(lambda: last.exists() and safe_load(last)["epoch"] >= 1, proc)  # two epochs done: one is in the history
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + sig, err[-2000:]
    s = summary(run)
    assert (
        s["status"] == "interrupted"
        and s["error"] == f"interrupted by {signal.Signals(sig).name}"
        and 1 <= s["epochs"] < 25
    )
    console = out + err
    assert (
        console.count(f"job interrupted (interrupted by {signal.Signals(sig).name}); summary in {run / 'metrics.json'}")
        == 1
    )
    assert "Traceback" not in console and len(console.strip().splitlines()) <= 3, console
    if sig == signal.SIGTERM:  # what was written is enough to finish
        again = run_cli([*args, "resume=true"], cwd=tmp_path)
        assert again.returncode == 0, again.stderr[-2000:]
        assert summary(run)["status"] == "ok" and [e["epoch"] for e in summary(run)["history"]] == list(range(25))


@pytest.mark.slow
def test_an_interrupted_sweep_counts_every_job_and_resumes_with_the_printed_command(tmp_path):
    sweep = tmp_path / "sweep"
    proc = spawn(["-m", f"hydra.sweep.dir={sweep}", *LONG, "seed=0,1,2"], tmp_path)
    wait_for(lambda: list(sweep.glob("*/metrics.json")) and in_training(sweep), proc)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-2000:]
    line = closing(out)
    head, resume, report = line.split("; ")
    assert head == "1 ok, 0 failed, 1 interrupted, 1 not started", line
    assert resume.startswith("resume: python ") and report == f"report: python scripts/report.py {sweep}"
    command = shlex.split(resume.removeprefix("resume: "))
    assert command[-2:] == ["resume=true", f"hydra.sweep.dir={sweep}"] and "seed=0,1,2" in command
    again = subprocess.run(
        [sys.executable, *command[1:]], cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert closing(again.stdout) == f"3 ok, 0 failed; report: python scripts/report.py {sweep}"


@pytest.mark.slow
def test_a_killed_pool_worker_costs_its_own_job_only(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPOUT_LAB_LOCK_DIR", str(tmp_path))
    sweep = tmp_path / "sweep"
    proc = spawn(
        ["-m", "hydra/launcher=gpu_pool", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", *LONG, "seed=0,1,2,3"],
        tmp_path,
    )
    wait_for(lambda: len(in_training(sweep, 2)) == 2 and len(worker_pids(proc.pid)) == 2, proc)
    os.kill(worker_pids(proc.pid)[0], signal.SIGKILL)  # as the out-of-memory killer would
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 1, err[-3000:]
    status = {job.name: summary(job) for job in sweep.glob("*/") if (job / "metrics.json").exists()}
    assert sorted(s["status"] for s in status.values()) == ["failed", "ok", "ok", "ok"]
    (failed,) = [s for s in status.values() if s["status"] == "failed"]
    assert failed["error"] == OOM and failed["config"]["seed"] in (0, 1)
    assert closing(out).startswith("3 ok, 1 failed; resume: python ")
    assert err.count(OOM) == 1 and "TerminatedWorkerError" not in err and "Traceback" not in err, err[-3000:]
    write_report(sweep)
    with open(sweep / "jobs.csv") as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["status"], r["error"]) for r in rows) == [("failed", OOM), ("ok", ""), ("ok", ""), ("ok", "")]


@pytest.mark.slow
def test_a_killed_launcher_leaves_no_orphans_and_resume_finds_every_slot_free(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPOUT_LAB_LOCK_DIR", str(tmp_path))
    sweep = tmp_path / "sweep"
    args = [
        "-m",
        "hydra/launcher=gpu_pool",
        "hydra.launcher.n_jobs=2",
        f"hydra.sweep.dir={sweep}",
        *LONG,
        "seed=0,1,2,3",
    ]
    proc = spawn(args, tmp_path)
    wait_for(lambda: len(in_training(sweep, 2)) == 2 and len(worker_pids(proc.pid)) == 2, proc)
    pids, running = worker_pids(proc.pid), in_training(sweep, 2)
    proc.kill()  # the launcher alone, as `kill -9 <pid>` does
    proc.communicate(timeout=60)
    deadline = time.time() + 5
    while any(alive(pid) for pid in pids) and time.time() < deadline:
        time.sleep(0.05)
    assert not [pid for pid in pids if alive(pid)], "workers outlived their launcher by 5 s"
    for lock in sorted(tmp_path.glob("dropout-lab-slot*-of2.lock")):  # both slots are free again
        with open(lock, "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    # a job in training when the launcher died wrote an interrupted summary and kept its checkpoint (one
    # that ended in the instant between the snapshot and the kill is ok and kept nothing)
    ended = {job.name: summary(job)["status"] for job in running}
    assert set(ended.values()) <= {"interrupted", "ok"} and "interrupted" in ended.values(), ended
    assert all((job / "checkpoints" / "last.ckpt").exists() for job in running if ended[job.name] == "interrupted")
    again = run_cli([*args, "resume=true"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert closing(again.stdout).startswith("4 ok, 0 failed")
    assert all(
        "resume: continuing from" in (job / "train.log").read_text() for job in running if ended[job.name] != "ok"
    )


@pytest.mark.slow
def test_a_full_disk_is_reported_by_its_cause(tmp_path):
    """The file-size limit (RLIMIT_FSIZE) makes the checkpoint write fail as a full disk does (an OSError
    under torch.save's RuntimeError); the summary itself is small enough to be written."""
    run = tmp_path / "run"

    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
        resource.setrlimit(resource.RLIMIT_FSIZE, (300_000, 300_000))

    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), f"hydra.run.dir={run}", *TINY],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit,
    )
    cause = f"File too large: {run / 'checkpoints' / 'last.ckpt'}"
    assert proc.returncode == 1 and proc.stderr.count(cause) == 1 and "Traceback" not in proc.stderr, proc.stderr[
        -3000:
    ]
    assert len(proc.stderr.strip().splitlines()) <= 5, proc.stderr
    s = summary(run)
    assert s["status"] == "failed" and s["error"] == cause
    assert (
        "inline_container" in s["traceback"] and "[Errno 27] File too large" in s["traceback"]
    )  # the whole chain kept
    assert not list((run / "checkpoints").glob(".*.tmp"))
    write_report(run.parent)
    with open(run.parent / "jobs.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert row["error"] == cause


@pytest.mark.slow
def test_a_bad_value_in_a_sweep_fails_its_own_job_only(tmp_path):
    sweep = tmp_path / "sweep"
    proc = run_cli(["-m", f"hydra.sweep.dir={sweep}", *TINY, "dropout=standard", "dropout.p=0.1,abc"], cwd=tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.count("dropout.p='abc': must be a number in [0, 1)") == 1 and "Traceback" not in proc.stderr
    jobs = {
        summary(job)["config"]["dropout"]["p"]: summary(job)["status"]
        for job in sweep.glob("*/")
        if (job / "metrics.json").exists()
    }
    assert jobs == {0.1: "ok", "abc": "failed"}
    assert json.loads((sweep / "hparams_spec.json").read_text())["hparams"]["p"] == [
        0.1
    ]  # the spec holds validated values only


def test_an_unknown_key_is_refused_naming_the_closest_one(tmp_path):
    proc = run_cli([f"hydra.run.dir={tmp_path / 'run'}", "dataset.batchsize=32"], cwd=tmp_path)
    assert (
        proc.returncode == 1
        and proc.stderr.strip() == "dataset.batchsize=32: unknown key; did you mean dataset.batch_size?"
    )
    assert not (tmp_path / "run").exists()
    sweep = run_cli(
        ["-m", f"hydra.sweep.dir={tmp_path / 'sweep'}", "dropout=standard,taylor", "dropout.pp=0.1,0.3"], cwd=tmp_path
    )
    assert sweep.returncode == 1 and sweep.stderr.strip() == "dropout.pp=0.1: unknown key; did you mean dropout.p?"


@pytest.mark.slow
def test_eval_py_checks_its_input_as_train_py_does(tmp_path):
    job = tmp_path / "job"
    assert run_cli([f"hydra.run.dir={job}", *TINY, "keep_checkpoint=last"], cwd=tmp_path).returncode == 0
    for arg, message in (
        ("eval.mc_sample=5", "eval.mc_sample=5: unknown key; did you mean eval.mc_samples?"),
        ("eval.mc_samples=-1", "eval.mc_samples=-1: must be an integer >= 0"),
        ("ckpt=bets", "ckpt='bets': use last (the final epoch) or best (the epoch with the highest val/acc)"),
    ):
        proc = subprocess.run(
            [sys.executable, str(ROOT / "eval.py"), f"run_dir={job}", arg],
            cwd=tmp_path,
            env=cli_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert proc.returncode == 1 and proc.stderr.strip() == message and not proc.stdout, proc.stderr[-2000:]
    assert not list(job.glob("eval_*.json"))


@pytest.mark.slow
def test_a_reduced_chaos_sweep_loses_nothing(tmp_path):
    """scripts/chaos.py on 4 jobs with 2 random SIGKILLs (workers or the launcher): every job ok, equal to the
    undisturbed run, none trained twice from scratch, nothing left in temp folders."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chaos.py"), "--jobs", "4", "--kills", "2", "--epochs", "8"],
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    header, _, values = proc.stdout.splitlines()[:3]
    counts = dict(
        zip((c.strip() for c in header.strip("|").split("|")), (v.strip() for v in values.strip("|").split("|")))
    )
    assert (
        counts["results lost"] == "0"
        and counts["trained twice from scratch"] == "0"
        and counts["temp files left"] == "0"
    )
    assert int(counts["workers killed"]) + int(counts["launcher killed"]) == 2 and counts["orphans"] == "0"


def test_an_interruption_inside_a_library_call_is_still_an_interruption():
    """SIGTERM during torch.save's write surfaces as torch's RuntimeError, the Interrupted in its context."""
    from dropout_lab.interrupts import Interrupted, signal_of

    try:
        try:
            raise Interrupted(signal.SIGTERM)
        except Interrupted:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")  # noqa: B904
    except RuntimeError as err:
        assert signal_of(err) == signal.SIGTERM
    assert signal_of(ValueError("x")) is None


def test_a_signal_during_a_checkpoint_write_is_raised_after_the_checkpoint_is_in_place(tmp_path, monkeypatch):
    """Defect: SIGINT while torch.save wrote last.ckpt through its Python file raised inside the C++ writer, which
    aborted the job (exit -6, "terminate called after throwing ... write to closed file", no summary). Now the
    write finishes, the new checkpoint is renamed into place, and the interruption is raised after it."""
    from dropout_lab import checkpoints
    from dropout_lab.interrupts import Interrupted, trap

    def save_with_a_signal_in_the_middle(obj, f):
        f.write(b"first half ")
        os.kill(os.getpid(), signal.SIGTERM)  # the handler runs at the next bytecode, inside the "C++" write
        f.write(b"second half")

    monkeypatch.setattr(checkpoints.torch, "save", save_with_a_signal_in_the_middle)
    target = tmp_path / "last.ckpt"
    with trap(), pytest.raises(Interrupted) as err:
        checkpoints.AtomicCheckpointIO().save_checkpoint({}, target)
    assert err.value.signum == signal.SIGTERM and err.value.code == 128 + signal.SIGTERM
    assert target.read_bytes() == b"first half second half"
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left
