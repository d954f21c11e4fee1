"""The benchmarks' one library (``scripts/bench_*.py``, ``scripts/chaos.py``), shared with the tests: compose a
config, the reference bare PyTorch loop and the same work under Lightning's barebones Trainer (the floor), a whole
job through the harness, a LeNet5 pre-trained on MNIST, the Python call counter, starting ``train.py`` in a
subprocess and killing it at a chosen moment, the machine line, and writing a table into docs/.
``python scripts/bench_<x>.py`` puts this folder on ``sys.path``; the tests have it through pytest's ``pythonpath``
(pyproject.toml)."""

from __future__ import annotations

import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dropout_lab.config import attach, instantiate_model
from dropout_lab.data import TensorBatches
from dropout_lab.job import Job
from dropout_lab.module import fast_kwargs
from dropout_lab.train import train

ROOT = Path(__file__).resolve().parents[1]


def config(out: Path, overrides: list[str]):
    """``conf/config.yaml`` composed with ``overrides``, writing into ``out``, on the CPU unless overridden."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[f"output_dir={out}", "trainer.accelerator=cpu", *overrides])


def seeded_parts(cfg, device: str = "cpu") -> tuple[torch.nn.Module, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """What the bare loop and the Lightning floor start from: torch's global generator seeded with ``cfg.seed``,
    then ``cfg``'s model with its dropout method attached, on ``device``, and the dataset's normalised splits there
    (``{"train" | "val" | "test": (x (N, C, H, W) float32, y (N,) int64)}``)."""
    torch.manual_seed(cfg.seed)
    dm = instantiate(cfg.dataset)
    dm.setup("fit")
    model = instantiate_model(cfg)
    attach(model, cfg.dropout)
    return model.to(device), dm.normalised(torch.device(device))


def bare_loop(
    cfg,
    epochs: int,
    fused: bool = True,
    max_batches: int | None = None,
    validate: bool = False,
    test_best: bool = False,
    device: str = "cpu",
) -> tuple[float, float]:
    """The plainest training loop over the datamodule's tensors, with ``torch.optim.Adam`` (``fused``: the
    harness's kernel); optionally a validation pass per epoch and (``test_best``) a second test of the
    best-validation epoch's weights, kept in memory, as the harness tests both; data, model and optimizer on
    ``device``. Returns (train samples/s, test accuracy)."""
    model, splits = seeded_parts(cfg, device)
    optimizer = torch.optim.Adam(
        model.parameters(),
        lr=cfg.optimizer.lr,
        **(fast_kwargs(torch.optim.Adam, torch.device(device)) if fused else {}),
    )
    x, y = splits["train"]
    seconds, samples, best, best_state = 0.0, 0, -1.0, None
    for _ in range(epochs):
        model.train()
        start = time.perf_counter()
        for i, (xb, yb) in enumerate(TensorBatches(x, y, cfg.dataset.batch_size, shuffle=True)):
            if i == max_batches:
                break
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            samples += len(yb)
        seconds += time.perf_counter() - start
        if validate:
            acc = evaluate(model, *splits["val"])
            if test_best and acc > best:
                best, best_state = acc, {k: v.clone() for k, v in model.state_dict().items()}
    accuracy = evaluate(model, *splits["test"])
    if best_state is not None:
        model.load_state_dict(best_state)
        evaluate(model, *splits["test"])
    return samples / seconds, accuracy


class FloorModule(pl.LightningModule):
    """A LightningModule of nothing but a training step (cross-entropy), a validation and a test step (counting
    correct predictions in :attr:`correct`), keeping the best validation epoch's weights in memory
    (:attr:`best_state`) and torch's fused Adam where it has one: what :func:`lightning_floor` runs."""

    def __init__(self, model: torch.nn.Module, lr: float) -> None:
        super().__init__()
        self.model, self.lr, self.correct, self.best, self.best_state = model, lr, 0, -1, None

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self.model(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.correct += (self.model(batch[0]).argmax(1) == batch[1]).sum().item()

    test_step = validation_step

    def on_validation_epoch_end(self):
        if self.correct > self.best:
            self.best, self.best_state = self.correct, {k: v.clone() for k, v in self.model.state_dict().items()}
        self.correct = 0

    def configure_optimizers(self):
        return torch.optim.Adam(self.model.parameters(), lr=self.lr, **fast_kwargs(torch.optim.Adam, self.device))


def lightning_floor(cfg, epochs: int, device: str = "cpu") -> tuple[float, float]:
    """The work of ``bare_loop(cfg, epochs, validate=True, test_best=True, device=device)`` (the same seed, model,
    fused Adam, batches and passes) run by Lightning's own ``Trainer(barebones=True)`` (checkpointing, logging, the
    progress bar, model summary, sanity check and profiler off) with :class:`FloorModule`: Lightning's loop with
    nothing of the harness in it, the floor of any harness built on Lightning's Trainer (docs/bench_harness.md,
    "flagship regime"). Returns the test accuracy (fraction) of the last weights and of the best-validation
    epoch's."""
    model, splits = seeded_parts(cfg, device)
    module = FloorModule(model, cfg.optimizer.lr)
    accelerator = "gpu" if device == "cuda" else device
    trainer = pl.Trainer(barebones=True, max_epochs=epochs, accelerator=accelerator, devices=1, logger=False)
    val, test = (TensorBatches(*splits[name], 1000, shuffle=False) for name in ("val", "test"))
    trainer.fit(module, TensorBatches(*splits["train"], cfg.dataset.batch_size, shuffle=True), val)
    accuracies = []
    for state in (None, module.best_state):
        if state is not None:
            model.load_state_dict(state)
        module.correct = 0
        trainer.test(module, test, verbose=False)
        accuracies.append(module.correct / len(splits["test"][1]))
    return accuracies[0], accuracies[1]


def evaluate(model, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``model`` (eval mode) on (x, y), batches of 1000."""
    model.eval()
    with torch.no_grad():
        correct = sum((model(xb).argmax(1) == yb).sum().item() for xb, yb in TensorBatches(x, y, 1000, shuffle=False))
    return correct / len(y)


def pretrained_lenet5(
    data_root: str, steps: int = 150, n: int = 8192
) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """A LeNet5 after ``steps`` Adam steps (lr 1e-3, batch 128, seed 0) on the first ``n`` MNIST training images,
    with those images normalised, (n, 1, 28, 28), and their labels, (n,): trained weights for score methods."""
    from torchvision.datasets import MNIST

    from dropout_lab.models import LeNet5

    ds = MNIST(data_root, train=True, download=False)
    x, y = ((ds.data[:n].float() / 255 - 0.1307) / 0.3081).unsqueeze(1), ds.targets[:n]
    torch.manual_seed(0)
    net = LeNet5()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    for _ in range(steps):
        idx = torch.randint(0, n, (128,))
        opt.zero_grad()
        F.cross_entropy(net(x[idx]), y[idx]).backward()
        opt.step()
    return net, x, y


def python_calls(run, all_threads: bool = False) -> int:
    """Python-level function calls (``sys.setprofile`` "call" events) made by ``run()``, the call of ``run`` itself
    excluded; ``all_threads``: also in threads started meanwhile (``threading.setprofile``: a progress bar)."""
    calls = 0

    def tracer(frame, event, arg):
        nonlocal calls
        calls += event == "call"

    sys.setprofile(tracer)
    if all_threads:
        threading.setprofile(tracer)
    try:
        run()
    finally:
        sys.setprofile(None)
        threading.setprofile(None)
    return calls - 1


def timed(run) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (this process) and minor page faults of ``run()``."""
    faults, start, cpu = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter(), time.process_time()
    run()
    return (
        time.perf_counter() - start,
        time.process_time() - cpu,
        resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults,
    )


def median_ratio(xs: list[float], ys: list[float]) -> float:
    """The median over rounds of ``xs[i] / ys[i]``: a ratio of runs that shared a round's machine state."""
    return statistics.median(x / y for x, y in zip(xs, ys))


def in_turn(runs: list, round_: int) -> list:
    """``runs`` in the order of round ``round_``: as given in even rounds, reversed in odd ones, so that no run is
    always the last of its round (on this VM the run last in a round measured slower: docs/measurements.md)."""
    return runs if round_ % 2 == 0 else runs[::-1]


def run_job(cfg) -> dict:
    """Train ``cfg`` through :func:`dropout_lab.train.train` (Lightning) and return its summary."""
    train(cfg)
    return Job(Path(cfg.output_dir)).read()


def environment(**extra: str) -> dict[str, str]:
    """This process's environment with ``src/`` on ``PYTHONPATH`` and the variables ``extra``: what a ``train.py``
    started from here needs."""
    return {**os.environ, "PYTHONPATH": str(ROOT / "src"), **extra}


def start(args: list[str], cwd: Path | None = None, env: dict[str, str] | None = None, capture: bool = True):
    """``python train.py args`` as a ``subprocess.Popen`` in its own session (so that a kill of its process group
    takes its workers too), in :func:`environment` with ``env`` added; stdout and stderr captured as text
    (``capture``) or discarded. The child gets SIGINT as a foreground command has it, even when this process
    ignores it: a shell without job control starts a background command (``pytest ... &`` in a script) with
    SIGINT ignored, and an ignored signal stays ignored across ``exec``, so ``train.py`` would rightly leave it
    ignored (POSIX: a background job is not Ctrl-C's target). Call from the main thread."""
    out = subprocess.PIPE if capture else subprocess.DEVNULL
    ignored = signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    if ignored:  # for the fork only: a handler, unlike SIG_IGN, is reset to the default by exec
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return subprocess.Popen(
            [sys.executable, str(ROOT / "train.py"), *args],
            cwd=cwd,
            env=environment(**(env or {})),
            text=True,
            stdout=out,
            stderr=out,
            start_new_session=True,
        )
    finally:
        if ignored:
            signal.signal(signal.SIGINT, signal.SIG_IGN)


def wait_for(ready, proc, timeout: float = 300.0, poll: float = 0.005) -> None:
    """Return as soon as ``ready()`` is true while ``proc`` runs (polled every ``poll`` s).

    Raises:
        AssertionError: if ``proc`` ends, or ``timeout`` seconds pass, first (the fault could not be injected)."""
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None and time.time() < deadline, "the run ended before the fault could be injected"
        time.sleep(poll)


def kill_when(proc, ready, timeout: float = 300.0) -> None:
    """SIGKILL ``proc``'s whole process group (as a node failure would) as soon as ``ready()`` is true, then reap it.

    Raises:
        AssertionError: if ``proc`` ended first (:func:`wait_for`)."""
    wait_for(ready, proc, timeout)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def machine() -> str:
    """One line naming the machine (CPU, cores this process may use, torch version, GPU if any)."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no GPU"
    return (
        f"{platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} cores, torch {torch.__version__}{gpu}, "
        f"load average {os.getloadavg()[0]:.1f} at the end (the benchmark's own processes included)"
    )


def write_table(out: Path, header: str, rows: list[str], append: bool = False) -> None:
    """Print ``rows`` and write ``header`` and the table to ``out``; ``append``: add the last row below the table's
    last row of an existing ``out`` instead (notes under the table stay last)."""
    print("\n".join(rows))
    out.parent.mkdir(parents=True, exist_ok=True)
    if append and out.exists():
        lines = out.read_text().rstrip("\n").split("\n")
        last = max(i for i, line in enumerate(lines) if line.startswith("| "))
        out.write_text("\n".join([*lines[: last + 1], rows[-1], *lines[last + 1 :]]) + "\n")
    else:
        out.write_text(header + "\n\n" + "\n".join(rows) + "\n")
    print(f"wrote {out}")


def write_section(out: Path, title: str, header: str, rows: list[str]) -> None:
    """Print ``rows`` and write them as the section ``## title`` of ``out`` (replacing that section if present;
    the file's other sections and the text above its first section stay)."""
    print("\n".join(rows))
    text = out.read_text() if out.exists() else ""
    preamble, *parts = ("\n" + text).split("\n## ")  # the text above the first section is kept
    sections = {part.split("\n", 1)[0]: part for part in parts}
    sections[title] = f"{title}\n\n{header}\n\n" + "\n".join(rows) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    head = preamble.strip() + "\n\n" if preamble.strip() else ""
    out.write_text(head + "\n\n".join(f"## {part.rstrip()}" for part in sections.values()) + "\n")
    print(f"wrote {out} (section {title!r})")
