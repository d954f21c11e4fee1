"""Per-training-step time of dropout methods relative to ``standard`` at the same sites.

LeNet5 on MNIST-shaped inputs (batch 128, CPU, Adam): forward + backward + optimizer step, timed in
one process with the methods interleaved round by round (so machine load hits all of them alike).
Prints a table and writes it to ``--out``. Run under the shared CPU lock:

    flock /tmp/dropout-lab-cpu.lock python scripts/bench_layer_methods.py adaptive maxdropout ...
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from dropout_lab.dropout.sites import attach
from dropout_lab.models.lenet import LeNet5

CONF = Path(__file__).resolve().parents[1] / "conf"


def build(key: str, sites: str, p: float | None):
    """A LeNet5 with ``dropout=<key>`` at ``sites``, its Adam optimizer and a step closure."""
    overrides = [f"dropout={key}", f"dropout.sites={sites}", "data_root=.", "output_dir=."]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides + ([f"dropout.p={p}"] if p is not None else []))
    torch.manual_seed(0)
    model = LeNet5()
    attach(model, cfg.dropout)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(128, 1, 28, 28), torch.randint(0, 10, (128,))

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("keys", nargs="+", help="dropout config names (conf/dropout/<key>.yaml)")
    parser.add_argument("--sites", default="fc")
    parser.add_argument("--p", type=float, default=None, help="override dropout.p for every method")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps", type=int, default=5, help="steps per method per round")
    parser.add_argument("--out", default="outputs/bench_layer_methods.md")
    args = parser.parse_args()
    keys = ["standard", *[k for k in args.keys if k != "standard"]]
    steps = {key: build(key, args.sites, args.p) for key in keys}
    times: dict[str, list[float]] = {key: [] for key in keys}
    for step in steps.values():  # warm-up
        for _ in range(3):
            step()
    for _ in range(args.rounds):
        for key, step in steps.items():
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            times[key].append((time.perf_counter() - t0) / args.steps)
    base = statistics.median(times["standard"])
    lines = [f"| method | ms/step (median of {args.rounds} x {args.steps}) | x standard |", "| --- | ---: | ---: |"]
    lines += [f"| {k} | {1e3 * statistics.median(v):.2f} | {statistics.median(v) / base:.2f} |" for k, v in times.items()]
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(f"sites={args.sites}, p={args.p or 'config default'}, torch threads={torch.get_num_threads()}\n\n{table}\n")


if __name__ == "__main__":
    main()
