"""GPU benchmark, ready to run (an estimated 8-9 minutes on one GPU; it has not run on one yet):

    python scripts/bench_gpu.py                      # on a machine with a GPU, DROPOUT_LAB_DATA holding MNIST
    python scripts/bench_gpu.py --device cpu --tiny  # the CPU path (what the test suite runs), seconds

Rows: (1) LeNet5 MNIST training epoch (54k, batch 128) in fp32 and in bf16 autocast, through the harness's
own training step (``Classifier.training_step`` + its fused optimizer) with ``torch.cuda.set_sync_debug_mode
("error")`` on during the steps, so any host sync in the step raises; (2) a ResNet-18 epoch on CIFAR-shaped
tensors (45k x 3 x 32 x 32, random: no CIFAR files needed) in bf16 + channels_last; (3) a flagship-shaped
sweep (LeNet5 + standard dropout, MNIST, 1 epoch; the runner of ``scripts/bench_workers.py``) with 1, 4 and 8
jobs per GPU through ``hydra/launcher=gpu_pool``, in jobs/h; (4) one flagship-shaped job (the comparison's own
regime: ``bench_harness.FLAGSHIP``, 40 epochs of 16 steps, validation every epoch, two 10k tests) through
``train()`` with ``trainer.accelerator=gpu`` against the same bare loop on the GPU and the same work under
Lightning's own ``Trainer(barebones=True)`` (``benchlib.lightning_floor``, the floor of a harness on Lightning's
Trainer), rounds alternating in one process: wall seconds, bare / harness and bare / floor (issue 18's item 1 on
a GPU). Also the peak GPU memory of a LeNet5
epoch (what ``gpu_pool``'s ``job_memory_gb`` sizes). Without MNIST files row 1 uses random MNIST-shaped tensors
(and says so) and rows 3 and 4 are skipped. Writes docs/bench_gpu.md.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from bench_workers import job_overrides, sweep
from benchlib import (
    ROOT,
    bare_loop,
    config,
    in_turn,
    lightning_floor,
    machine,
    median_ratio,
    run_job,
    timed,
    write_section,
)
from hydra.utils import instantiate

from bench_harness import FLAGSHIP
from dropout_lab.config import attach
from dropout_lab.data import TensorBatches
from dropout_lab.errors import ConfigError
from dropout_lab.models import LeNet5
from dropout_lab.models.resnet import resnet18
from dropout_lab.module import Classifier


def mnist(device: torch.device, n: int) -> tuple[tuple[torch.Tensor, torch.Tensor], str]:
    """The first ``n`` normalised MNIST training samples on ``device``, else random MNIST-shaped ones."""
    dm = instantiate(config(Path("."), ["dataset.download=false"]).dataset)
    try:
        dm.setup()
    except ConfigError:
        return (
            torch.randn(n, 1, 28, 28, device=device),
            torch.randint(0, 10, (n,), device=device),
        ), "random MNIST-shaped tensors"
    x, y = dm.normalised(device)["train"]
    return (x[:n], y[:n]), "MNIST"


def epoch(
    model: torch.nn.Module,
    data: tuple[torch.Tensor, torch.Tensor],
    batch_size: int,
    bf16: bool,
    channels_last: bool = False,
) -> tuple[float, int]:
    """One training epoch through ``Classifier.training_step`` and its optimizer (after a warm-up of 5 batches, 2 for tiny data);
    returns (samples/s, peak bytes allocated). Host syncs inside the timed steps raise on CUDA."""
    device = data[0].device
    module = Classifier(model, partial(torch.optim.Adam, lr=1e-3), None, num_classes=10, dataset_size=len(data[1])).to(
        device
    )
    if channels_last:
        module = module.to(memory_format=torch.channels_last)
    optimizer = module.configure_optimizers()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    cuda = device.type == "cuda"

    def run(batches, check: bool) -> int:
        samples = 0
        for i, (x, y) in enumerate(batches):
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            if cuda and check:
                torch.cuda.set_sync_debug_mode("error")
            with autocast:
                loss = module.training_step((x, y), i)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
            samples += len(y)
        return samples

    # warm-up unchecked: the optimizer's first step creates its state from host values
    run(
        (b for b, _ in zip(TensorBatches(*data, batch_size, shuffle=True), range(2 if len(data[1]) < 1000 else 5))),
        check=False,
    )
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    samples = run(TensorBatches(*data, batch_size, shuffle=True), check=True)
    if cuda:
        torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    return samples / (time.perf_counter() - start), peak


def rate(x: float) -> str:
    """A throughput for the table: whole numbers from 10 up, two significant digits below (tiny CPU runs)."""
    return f"{x:.0f}" if x >= 10 else f"{x:.2g}"


def flagship_job(device: torch.device, rounds: int, epochs: int, test: int | None = None) -> list[str]:
    """Rows of row (4): the flagship-shaped job through ``train()`` on ``device`` (``trainer.accelerator=gpu`` on
    CUDA), the bare loop doing the same passes there and the same under Lightning's barebones Trainer
    (:func:`benchlib.lightning_floor`), ``rounds`` alternating (:func:`benchlib.in_turn`) after one 1-epoch
    warm-up of each (the data read and CUDA's start-up); each run ends on a host read of its test
    accuracy, so its wall time includes the GPU's work. ``test``: that many test images instead of the 10k (the tiny CPU path)."""
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    subset = [f"dataset.subset={{train: 1000, val: 1000, test: {test}}}"] if test else []
    bare, floor, ours = [], [], []
    with tempfile.TemporaryDirectory() as tmp:

        def cfg(name: str, n: int):
            return config(
                Path(tmp) / name,
                [*FLAGSHIP, *subset, f"trainer.accelerator={accelerator}", f"trainer.max_epochs={n}"],
            )

        bare_loop(cfg("warm-bare", 1), 1, validate=True, test_best=True, device=device.type)
        lightning_floor(cfg("warm-floor", 1), 1, device=device.type)
        run_job(cfg("warm", 1))
        for i in range(rounds):
            runs = [
                (
                    bare,
                    lambda: bare_loop(
                        cfg(f"bare{i}", epochs), epochs, validate=True, test_best=True, device=device.type
                    ),
                ),
                (floor, lambda: lightning_floor(cfg(f"floor{i}", epochs), epochs, device=device.type)),
                (ours, lambda: run_job(cfg(f"job{i}", epochs))),
            ]
            for results, run in in_turn(runs, i):
                results.append(timed(run)[0])
    b, h = statistics.median(bare), statistics.median(ours)
    ratio, floor_ratio = median_ratio(bare, ours), median_ratio(bare, floor)
    shape = f"LeNet5 + standard p=0.5, MNIST 1,000/1,000 + {test or 10_000:,} test, batch 64, {epochs} epochs, {rounds} rounds"
    return [
        f"| flagship-shaped job ({shape}), bare loop on {device.type}: s (median) | {b:.2f} |",
        f"| flagship-shaped job, harness with trainer.accelerator={accelerator}: s (median) | {h:.2f} |",
        f"| flagship-shaped job, Lightning barebones floor on {device.type}: s (median) | {statistics.median(floor):.2f} |",
        f"| flagship-shaped job: bare / harness (median of the rounds' ratios) | {ratio:.3f} |",
        f"| flagship-shaped job: bare / Lightning floor (median of the rounds' ratios) | {floor_ratio:.3f} |",
    ]


def lenet5_standard() -> torch.nn.Module:
    model = LeNet5()
    attach(model, config(Path("."), ["dropout=standard"]).dropout)
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--tiny", action="store_true", help="a few batches and a 2-job sweep (the CPU path of the tests)"
    )
    parser.add_argument("--sweep-jobs", type=int, default=16, help="jobs in each sweep row")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "bench_gpu.md")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    n_mnist, n_cifar, cifar_batch = (512, 16, 4) if args.tiny else (54_000, 45_000, 128)
    data, source = mnist(device, n_mnist)
    rows = ["| measure | value |", "| --- | --- |"]
    peak = 0
    for bf16 in (False, True):
        speed, peak = epoch(lenet5_standard(), data, 128, bf16)
        rows.append(
            f"| LeNet5 + standard dropout, {source}, {len(data[1])} samples, batch 128, {'bf16 autocast' if bf16 else 'fp32'}: "
            f"samples/s (epoch s) | {rate(speed)} ({len(data[1]) / speed:.2f}) |"
        )
    if device.type == "cuda":
        rows.append("| host syncs inside the training step (set_sync_debug_mode('error')) | 0 (none raised) |")
        rows.append(
            f"| peak GPU memory of the LeNet5 bf16 epoch (model, optimizer, activations; + CUDA context ~0.5 GB), GB | {peak / 2**30:.2f} |"
        )
    cifar = (torch.randn(n_cifar, 3, 32, 32, device=device), torch.randint(0, 10, (n_cifar,), device=device))
    speed, _ = epoch(
        resnet18(num_classes=10, in_channels=3, image_size=32), cifar, cifar_batch, bf16=True, channels_last=True
    )
    rows.append(
        f"| ResNet-18, CIFAR-shaped random tensors, {n_cifar} samples, batch {cifar_batch}, bf16 + channels_last: samples/s (epoch s) | "
        f"{rate(speed)} ({n_cifar / speed:.1f}) |"
    )
    jobs, per_gpu = (2, [1]) if args.tiny else (args.sweep_jobs, [1, 4, 8])
    if source != "MNIST":
        rows.append("| flagship-shaped sweep and job | skipped: no MNIST files (set DROPOUT_LAB_DATA) |")
    else:
        gpus = max(torch.cuda.device_count(), 1) if device.type == "cuda" else 1
        overrides = job_overrides(1, 256 if args.tiny else 0) + (["trainer=smoke"] if args.tiny else [])
        with tempfile.TemporaryDirectory() as tmp:
            for k in per_gpu:
                jobs_per_h = sweep(k * gpus, jobs, overrides, Path(tmp) / f"k{k}")
                where = f"{k} job(s) per GPU" if device.type == "cuda" else f"{k} worker(s) on the CPU"
                rows.append(
                    f"| flagship-shaped sweep (LeNet5 + standard, MNIST, 1 epoch), {jobs} jobs, {where}: jobs/h | {jobs_per_h:.0f} |"
                )
        rows += flagship_job(device, *((1, 1, 1000) if args.tiny else (3, 40)))
    command = f"python scripts/bench_gpu.py --device {args.device}" + (" --tiny" if args.tiny else "")
    write_section(args.out, f"{device.type}{' (tiny)' if args.tiny else ''}", f"{machine()}; `{command}`", rows)


if __name__ == "__main__":
    main()
