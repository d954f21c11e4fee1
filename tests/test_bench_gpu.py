"""scripts/bench_gpu.py's CPU path: the same code that runs on a GPU, at tiny sizes."""

import os
import subprocess
import sys

import pytest

from conftest import DATA_ROOT, ROOT


@pytest.mark.slow
def test_bench_gpu_cpu_path_writes_every_row(tmp_path):
    out = tmp_path / "bench_gpu.md"
    env = {**os.environ, "DROPOUT_LAB_DATA": DATA_ROOT, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "bench_gpu.py"), "--device", "cpu", "--tiny", "--out", str(out)],
        cwd=ROOT / "scripts",
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = out.read_text()
    assert table.startswith("## cpu (tiny)") and "`python scripts/bench_gpu.py --device cpu --tiny`" in table
    rows = {
        line.split("|")[1].strip(): line.split("|")[2].strip()
        for line in table.splitlines()
        if line.startswith("| ") and "---" not in line
    }
    lenet = [key for key in rows if key.startswith("LeNet5")]
    assert len(lenet) == 2 and any("bf16" in key for key in lenet) and any("fp32" in key for key in lenet)
    assert any(key.startswith("ResNet-18") and "channels_last" in key for key in rows)
    sweeps = [value for key, value in rows.items() if key.startswith("flagship-shaped sweep")]
    assert len(sweeps) == 1 and float(sweeps[0]) > 0  # jobs/h of the 2-job sweep
    assert all(float(value.split()[0]) > 0 for key, value in rows.items() if key.startswith(("LeNet5", "ResNet")))
    job = {key: float(value) for key, value in rows.items() if key.startswith("flagship-shaped job")}
    assert len(job) == 5  # bare loop s, harness s (trainer.accelerator=cpu here), floor s, bare / harness, bare / floor
    bare, harness, floor, ratio, floor_ratio = job.values()
    assert bare > 0 and harness > 0 and floor > 0 and 0 < ratio < 10 and 0 < floor_ratio < 10
