"""The gpu_pool launcher's size: several jobs share a GPU by default, sized from the job's memory
footprint, and CUDA MPS is detected. GPUs are faked: this suite runs without one."""

from types import SimpleNamespace

import pytest
import torch

from dropout_lab import launch


@pytest.fixture
def gpus(monkeypatch):
    def fake(n: int, gb: float, cores: int = 16) -> None:
        monkeypatch.setattr(torch.cuda, "device_count", lambda: n)
        monkeypatch.setattr(
            torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=int(gb * 2**30))
        )
        monkeypatch.setattr(launch.os, "sched_getaffinity", lambda pid: set(range(cores)))

    return fake


def test_auto_fits_jobs_by_memory_at_least_four_small_jobs_per_gpu(gpus):
    gpus(1, 16)
    assert launch.pool_size() == 4  # 0.9 * 16 GB // 3 GB: LeNet5/MLP jobs
    gpus(2, 80)
    assert launch.pool_size() == 2 * launch.MAX_JOBS_PER_GPU
    assert launch.pool_size("auto", 30) == 2 * 2
    gpus(1, 80, cores=3)
    assert launch.pool_size() == 3  # one CPU core per job
    gpus(1, 2)
    assert launch.pool_size() == 1  # never fewer than one


def test_fixed_jobs_per_gpu_and_cpu_cores(gpus):
    gpus(2, 16)
    assert launch.pool_size(3) == 6 and launch.pool_size("2") == 4
    with pytest.raises(ValueError, match="jobs_per_gpu='many'"):
        launch.pool_size("many")
    gpus(0, 0, cores=2)
    assert launch.pool_size() == 2


def test_gpu_pool_launcher_config_shares_a_gpu_by_default(gpus):
    from omegaconf import OmegaConf

    from conftest import CONF

    gpus(1, 16)
    launcher = OmegaConf.load(CONF / "hydra" / "launcher" / "gpu_pool.yaml")
    assert launcher.n_jobs == 4


def test_mps_detected_from_its_control_pipe(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_MPS_PIPE_DIRECTORY", str(tmp_path))
    assert not launch.mps_active()
    (tmp_path / "control").touch()
    assert launch.mps_active()


def test_joblib_workers_split_the_cores_unless_threads_is_set(gpus, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    gpus(0, 0, cores=2)
    monkeypatch.setenv("DROPOUT_LAB_LOCK_DIR", str(tmp_path))
    monkeypatch.setattr(launch, "_claim", None)
    monkeypatch.setattr(torch, "set_num_threads", lambda n: calls.append(n))
    calls: list[int] = []
    joblib = OmegaConf.create(
        {"launcher": {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher", "n_jobs": 2}}
    )
    assert launch.place_job(OmegaConf.create({"threads": None}), joblib) == {"slot": 0, "threads": 1}
    assert launch.place_job(OmegaConf.create({"threads": 2}), joblib)["threads"] == 2  # 1 worker vs 2 at equal threads
    assert calls == [1, 2]
    basic = OmegaConf.create({"launcher": {"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}})
    assert launch.place_job(OmegaConf.create({"threads": 2}), basic) == {}  # train() applies it there
    assert launch.torch_threads(OmegaConf.create({"threads": None})) == 2
