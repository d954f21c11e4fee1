"""glibc's malloc keeps the memory a training step frees (launch.keep_freed_memory, called by train): the next
step's activations reuse it without page faults, and the arithmetic is bit for bit the same. Each measurement runs
in a fresh interpreter, since the setting is process-wide and cannot be undone."""

import platform
import subprocess
import sys

import pytest

from conftest import SMOKE, cli_env, make_cfg
from dropout_lab import launch

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")

#: a flagship-shaped step (conf/experiment/dropout_zoo.yaml): a LeNet5-sized convolution trained on a batch of 64
#: and evaluated on a batch of 1,000 (19 MB of activations, above glibc's default mmap threshold), repeated;
#: prints the minor page faults of steps 3-10 and the gradient's bits
STEPS = """
import resource, sys, torch
torch.manual_seed(0)
torch.set_num_threads(1)
conv, x = torch.nn.Conv2d(1, 6, 5, padding=2), torch.randn(1000, 1, 28, 28)
def step():
    conv.zero_grad(set_to_none=True)
    torch.nn.functional.max_pool2d(conv(x[:64]).relu(), 2).square().mean().backward()
    with torch.no_grad():
        torch.nn.functional.max_pool2d(conv(x).relu(), 2).argmax(1)
for _ in range(2):
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(8):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before, conv.weight.grad.double().sum().item().hex())
"""


def steps(setup: str = "", **env: str) -> tuple[int, str]:
    """Run ``setup`` then :data:`STEPS` in a fresh interpreter; return (page faults of 8 steps, gradient bits)."""
    out = subprocess.run(
        [sys.executable, "-c", setup + STEPS], env=cli_env(**env), capture_output=True, text=True, check=True
    ).stdout.split()
    return int(out[-2]), out[-1]


def test_steps_reuse_freed_memory_with_the_same_arithmetic():
    faults, grad = steps()
    kept_faults, kept_grad = steps("from dropout_lab import launch; assert launch.keep_freed_memory()\n")
    assert faults > 10 * 1000  # glibc's defaults: the activations are faulted in again at every step (4 KiB pages)
    assert kept_faults < 1000
    assert kept_grad == grad


def test_train_keeps_freed_memory_before_the_job_allocates(tmp_path, monkeypatch):
    # the order of the calls, not page faults after a job: a job's heap is fragmented by chance (one CI run saw
    # a batch-1000 activation, 4,593 pages, faulted in once more after a smoke job), while the setting's effect
    # on a fresh heap is what the first test measures
    from dropout_lab import train as train_module

    calls = []
    monkeypatch.setattr(launch, "keep_freed_memory", lambda: calls.append("keep_freed_memory") or True)
    build = train_module.build
    monkeypatch.setattr(train_module, "build", lambda *a: calls.append("build") or build(*a))
    train_module.train(make_cfg([*SMOKE, "trainer.max_epochs=1", "logger=none"], tmp_path))
    assert calls == ["keep_freed_memory", "build"]


def test_left_alone_when_the_environment_configures_malloc(monkeypatch):
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0")
    monkeypatch.setattr("ctypes.CDLL", lambda *a: pytest.fail("mallopt called despite GLIBC_TUNABLES"))
    assert launch.keep_freed_memory() is False
    faults, _ = steps(
        "from dropout_lab import launch; assert not launch.keep_freed_memory()\n", MALLOC_TRIM_THRESHOLD_="0"
    )
    assert faults > 10 * 1000
