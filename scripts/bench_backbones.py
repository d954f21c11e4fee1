"""Training throughput (samples/s) of each backbone on real Fashion-MNIST batches.

Each model is composed from the real configs (``model=<key> dataset=fashion_mnist``, source 004's Adadelta),
built with :func:`dropout_lab.config.build_model`, and trained for ``--warmup`` untimed then ``--steps`` timed
optimizer steps (forward, cross-entropy, backward, step) on batches sliced from the in-memory training tensors.
On a GPU every model runs in the four settings precision {fp32, bf16-mixed} x channels_last {off, on}; on a
CPU in fp32 only. Prints a Markdown table and writes it to ``--out``.

    flock /tmp/dropout-lab-cpu.lock python scripts/bench_backbones.py --steps 5 --batch-size 32
    python scripts/bench_backbones.py --steps 50 --batch-size 128 --image-size 224   # on a GPU, source 004's size
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F
from benchlib import ROOT
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from dropout_lab.config import build_model
from dropout_lab.options import options

MODELS = [m for m in options("model") if m not in ("lenet5", "mlp")]  # the torchvision backbones of conf/model


def measure(
    model: torch.nn.Module, optimizer, x: torch.Tensor, y: torch.Tensor, batch: int, steps: int, warmup: int, bf16: bool
) -> float:
    """Samples per second over ``steps`` timed training steps (after ``warmup`` untimed ones)."""
    cuda = x.is_cuda
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if bf16 else nullcontext()
    for step in range(warmup + steps):
        if step == warmup:
            torch.cuda.synchronize() if cuda else None
            start = time.perf_counter()
        i = (step * batch) % (len(x) - batch)
        with autocast:
            loss = F.cross_entropy(model(x[i : i + batch]), y[i : i + batch])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    torch.cuda.synchronize() if cuda else None
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="resize on the device (default: each model's native input_size, conf/model)",
    )
    parser.add_argument("--data-root", default=os.environ.get("DROPOUT_LAB_DATA", str(ROOT.parent / "shared" / "data")))
    parser.add_argument("--out", default=str(ROOT / "outputs" / "bench_backbones.md"))
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = (
        [(bf16, cl) for bf16 in (False, True) for cl in (False, True)] if device.type == "cuda" else [(False, False)]
    )
    torch.backends.cudnn.benchmark = True
    rows = []
    for name in args.models:
        size = [f"dataset.image_size={args.image_size}"] if args.image_size else []  # default: the model's input_size
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(
                "config",
                [
                    f"model={name}",
                    "dataset=fashion_mnist",
                    f"data_root={args.data_root}",
                    "output_dir=.",
                    "optimizer=adadelta",
                    *size,
                    f"dataset.subset={{train: {args.batch_size * 8}, val: 1, test: 1}}",
                ],
            )
        side = cfg.dataset.image_size
        dm = instantiate(cfg.dataset)
        dm.setup()
        x, y = dm.normalised()["train"]
        x = dm.train_transform(x) if not dm.train_transform.identity else x  # resize once, outside the timing
        x, y = x.to(device), y.to(device)
        for bf16, channels_last in settings:
            torch.manual_seed(0)
            model = build_model(cfg, dm).to(device)
            xs = x.contiguous(memory_format=torch.channels_last) if channels_last else x
            if channels_last:
                model = model.to(memory_format=torch.channels_last)
            optimizer = instantiate(cfg.optimizer)(model.parameters())
            rate = measure(model, optimizer, xs, y, args.batch_size, args.steps, args.warmup, bf16)
            params = sum(p.numel() for p in model.parameters())
            rows.append(
                (
                    name,
                    side,
                    f"{params / 1e6:.2f}",
                    "bf16-mixed" if bf16 else "fp32",
                    "on" if channels_last else "off",
                    f"{rate:.1f}",
                )
            )
            print(*rows[-1], sep="\t", file=sys.stderr)
    device_name = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    header = ("model", "input side", "params (M)", "precision", "channels_last", "train samples/s")
    lines = [
        f"Fashion-MNIST training throughput on {device_name}, torch {torch.__version__}, batch {args.batch_size}, "
        f"{args.steps} timed steps after {args.warmup} warm-up steps, Adadelta",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ] + ["| " + " | ".join(map(str, r)) + " |" for r in rows]
    table = "\n".join(lines)
    print(table)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(table + "\n")


if __name__ == "__main__":
    main()
