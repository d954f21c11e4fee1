"""hydra/launcher=slurm on a real one-node Slurm cluster (scripts/slurm_cluster.sh; .ci/run starts it):
a 4-job sweep runs to the end, a job preempted mid-run (submitit requeues it) continues from its checkpoint, a failing job
leaves the others alone. Skipped, with the reason, where no cluster answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import DATA_ROOT, ROOT, SMOKE
from dropout_lab.checkpoints import safe_load


def _cluster() -> str | None:
    """None if ``sinfo`` shows a usable node, else why not."""
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return f"sinfo failed ({err})"
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(s.startswith(("idle", "mix", "alloc")) for s in states):
        return f"no usable Slurm node (sinfo: {(proc.stderr or proc.stdout).strip() or 'no nodes'})"
    return None


REASON = _cluster()
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(REASON is not None, reason=f"{REASON}; start one with scripts/slurm_cluster.sh (root)"),
]

# one CPU and 1 GB per job, no GPU (the test cluster has none), the default partition
SLURM = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=null",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=10",
]


def sweep_cli(args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "DROPOUT_LAB_DATA": DATA_ROOT, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, str(ROOT / "train.py"), "-m", *SLURM, *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def summaries(sweep: Path) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")}


def test_sweep_runs_to_the_end_and_a_preempted_job_continues_from_its_checkpoint(tmp_path):
    sweep = tmp_path / "sweep"
    proc = sweep_cli(
        [f"hydra.sweep.dir={sweep}", *SMOKE, "trainer.max_epochs=4", "checkpoint_every=0", "seed=0,1,2,3"], tmp_path
    )
    requeued, deadline = None, time.time() + 600
    while requeued is None and time.time() < deadline and proc.poll() is None:
        for job in sweep.glob("*/.hydra/hydra.yaml"):
            folder, last = job.parent.parent, job.parent.parent / "checkpoints" / "last.ckpt"
            if last.exists() and not (folder / "metrics.json").exists() and safe_load(last)["epoch"] + 1 < 4:
                slurm_id = yaml.safe_load(job.read_text())["hydra"]["job"]["id"]
                # the signal Slurm sends before a preemption or the time limit (submitit's --signal=USR2@90):
                # submitit's handler calls the launcher's checkpoint() and requeues the job
                # (scancel reports "Job can not be altered now" as the requeue races its answer and
                # retries; stopped once the job is back in the queue, so that it signals no later run)
                signal_ = subprocess.Popen(["scancel", "--signal=USR2", slurm_id], stderr=subprocess.DEVNULL)
                while (
                    subprocess.run(
                        ["squeue", "-h", "-j", slurm_id, "-o", "%T"], capture_output=True, text=True
                    ).stdout.strip()
                    != "PENDING"
                ):
                    time.sleep(0.2)
                signal_.kill()
                signal_.wait()
                # Slurm holds a requeued job back about 2 min; let it start at once
                subprocess.run(
                    ["scontrol", "update", f"jobid={slurm_id}", "starttime=now"], check=True, capture_output=True
                )
                requeued = folder
                break
        time.sleep(0.05)
    out, _ = proc.communicate(timeout=600)
    assert requeued is not None, "no job could be requeued mid-run"
    assert proc.returncode == 0, out[-3000:]
    runs = summaries(sweep)
    assert len(runs) == 4 and all(s["status"] == "ok" and s["epochs"] == 4 for s in runs.values()), runs
    log = (requeued / "train.log").read_text()
    assert "requeued by Slurm (SLURM_RESTART_COUNT=1): resume=true" in log and "resume: continuing from" in log
    assert [e["epoch"] for e in runs[requeued.name]["history"]] == [0, 1, 2, 3]
    assert "Bypassing sacct error" not in out  # explained once instead (Slurm accounting is off here)


def test_a_failing_job_does_not_spoil_the_others(tmp_path):
    sweep = tmp_path / "sweep"
    proc = sweep_cli([f"hydra.sweep.dir={sweep}", *SMOKE, "dropout.p=0.5,1.5"], tmp_path)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode != 0  # Hydra re-raises the failure at the end, after every job ran
    status = {s["hparams"]["p"]: s["status"] for s in summaries(sweep).values()}
    assert status == {0.5: "ok", 1.5: "failed"}, out[-3000:]
