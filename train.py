"""Entry point: ``python train.py [overrides]`` trains one run; ``python train.py -m ...`` sweeps."""

import hydra
from omegaconf import DictConfig

from dropout_lab.train import train


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float:
    """Train the composed configuration; return the best validation accuracy (for Hydra sweepers)."""
    return train(cfg)["val/acc_best"]


if __name__ == "__main__":
    main()
