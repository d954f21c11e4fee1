"""Entry point: ``python train.py [overrides]`` trains one run; ``python train.py -m ...`` sweeps."""

import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from dropout_lab.errors import ConfigError
from dropout_lab.metrics import VAL_ACC_BEST
from dropout_lab.train import train
from dropout_lab.validate import preflight


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train the composed configuration; return the best validation accuracy (for Hydra sweepers)."""
    return train(cfg)[VAL_ACC_BEST]


if __name__ == "__main__":
    try:
        preflight(sys.argv[1:], Path(__file__).parent / "conf")  # an unknown key, named with the closest one
    except ConfigError as err:
        sys.exit(str(err))
    main()
