"""dropout-lab's Hydra sweeper plugin (see dedup_sweeper.py)."""
