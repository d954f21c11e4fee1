"""Re-test a saved job: ``python eval.py run_dir=<job folder> [ckpt=last|best] [key=value ...]``.

``ckpt`` picks ``<job>/checkpoints/last.ckpt`` (default) or ``best.ckpt``; other ``key=value`` pairs
override the job's own config (e.g. ``eval.mc_samples=20``). Writes ``<job>/eval_<ckpt>.json``.
"""

import sys

from omegaconf import OmegaConf

from dropout_lab.callbacks import QuietConsole
from dropout_lab.errors import ConfigError
from dropout_lab.retest import retest


def main(argv: list[str]) -> None:
    """Parse ``key=value`` arguments, re-test, print the test metrics and where they were written."""
    args = dict(arg.split("=", 1) for arg in argv if "=" in arg)
    if "run_dir" not in args or len(args) != len(argv):
        sys.exit("usage: python eval.py run_dir=<job folder> [ckpt=last|best] [key=value ...]")
    run_dir, ckpt = args.pop("run_dir"), args.pop("ckpt", "last")
    QuietConsole().on_job_start(None)  # the start-up notices train.py silences too
    try:
        metrics, path = retest(run_dir, ckpt, [f"{k}={v}" for k, v in args.items()])
    except (ConfigError, FileNotFoundError) as err:  # bad input: the message alone, as train.py prints it
        sys.exit(str(err))
    print(OmegaConf.to_yaml({k: v for k, v in sorted(metrics.items()) if k.startswith("test/")}), end="")
    print(f"written to {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
