"""Shared fixtures: the real configs composed with Hydra's compose API, shrunk for smoke runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from benchlib import environment, start
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
DATA_ROOT = os.environ.get("DROPOUT_LAB_DATA", str(ROOT.parent / "shared" / "data"))
# a real-MNIST smoke run: tiny subsets, a few batches, CPU
SMOKE = ["trainer=smoke", "dataset.subset={train: 512, val: 256, test: 256}", "dataset.batch_size=64"]


def make_cfg(overrides: list[str], output_dir: Path) -> DictConfig:
    """Compose ``conf/config.yaml`` with ``overrides``, the data root of the environment and
    ``output_dir`` (no Hydra app context is needed)."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(
            config_name="config", overrides=[f"data_root={DATA_ROOT}", f"output_dir={output_dir}", *overrides]
        )


def run_cli(
    args: list[str], cwd: Path, timeout: int = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """Run ``python train.py args`` in a subprocess from ``cwd`` with the test data root (``env``: more
    variables, or replacements)."""
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        env=cli_env(**(env or {})),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a ``train.py`` (or ``eval.py``, ``scripts/*.py``) the tests start: the test data root
    and ``extra`` (:func:`benchlib.environment`)."""
    return environment(**{"DROPOUT_LAB_DATA": DATA_ROOT, **extra})


def spawn(args: list[str], cwd: Path, capture: bool = True) -> subprocess.Popen:
    """``python train.py args`` started from ``cwd`` with the test data root, in its own session
    (:func:`benchlib.start`), for a test that interrupts it."""
    return start(args, cwd, {"DROPOUT_LAB_DATA": DATA_ROOT}, capture)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """One intra-op thread for the whole suite: on a busy 2-core machine OpenMP's spinning second
    thread made the deep-ResNet steps ~7x slower (71 s vs 10 s CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def cfg_factory(tmp_path):
    """``cfg_factory(overrides)`` -> a composed config writing into a fresh temporary folder."""

    def factory(overrides: list[str] = (), name: str = "run") -> DictConfig:
        return make_cfg(list(overrides), tmp_path / name)

    return factory
