"""Re-test a saved job from its folder alone: ``python eval.py run_dir=<job folder>``.

The job is rebuilt from its own ``.hydra/config.yaml`` (the config Hydra composed for it) by the
same :func:`~dropout_lab.config.build` that trained it, so a checkpoint's ``state_dict`` loads without
constructor arguments; the weights come from ``<job>/checkpoints/{last,best}.ckpt`` (kept with
``keep_checkpoint=last|best``), read with ``weights_only=True``. The test is
:func:`~dropout_lab.train.run_test`: ``test/*`` including each evaluation variant (EDropout's pruned
network) and, with ``eval.mc_samples`` > 0, Monte-Carlo dropout. See docs/sweeps.md.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dropout_lab import checkpoints
from dropout_lab.config import build, settings
from dropout_lab.errors import ConfigError
from dropout_lab.job import Job
from dropout_lab.train import run_test
from dropout_lab.validate import check_keys, validate


def job_config(run_dir: Path, overrides: list[str] = ()) -> DictConfig:
    """``run_dir/.hydra/config.yaml`` with ``output_dir=run_dir``, ``resume=false`` and the
    ``key=value`` ``overrides`` (e.g. ``eval.mc_samples=20``, ``data_root=...``) merged in, checked as
    train.py checks a config: known keys only (:func:`~dropout_lab.validate.check_keys`), then
    :func:`~dropout_lab.validate.validate`.

    Raises:
        FileNotFoundError: if ``run_dir`` has no ``.hydra/config.yaml`` (not a job folder).
        ConfigError: for an unknown key (naming the closest) or a bad value, before anything is built.
    """
    path = Path(run_dir) / ".hydra" / "config.yaml"
    if not path.is_file():
        raise FileNotFoundError(
            f"run_dir={run_dir}: no {path.relative_to(run_dir)}; pass a job folder written by "
            "train.py (one holding metrics.json and .hydra/)"
        )
    stored = OmegaConf.load(path)
    check_keys(stored, list(overrides))
    cfg = OmegaConf.merge(
        stored, {"output_dir": str(run_dir), "resume": False}, OmegaConf.from_dotlist(list(overrides))
    )
    cfg.pop("logger", None)  # a re-test logs nothing (and an MLflow run name would need Hydra's job context)
    validate(cfg)
    return cfg


def retest(run_dir: Path, ckpt: str = checkpoints.LAST, overrides: list[str] = ()) -> tuple[dict[str, float], Path]:
    """Test the job in ``run_dir`` on its ``ckpt`` checkpoint (``last`` | ``best``); write the
    metrics to ``run_dir/eval_<ckpt>.json`` beside the job's own ``metrics.json`` (untouched).

    Returns:
        (metrics, path of the written file); accuracies as fractions.

    Raises:
        FileNotFoundError: if the job folder or the checkpoint is missing (naming ``keep_checkpoint``).
        ConfigError: for ``ckpt`` other than last/best, an unknown key or a bad value (:func:`job_config`); UnsafeCheckpointError for a checkpoint that
            is not plain tensors (:func:`~dropout_lab.checkpoints.safe_load`).
    """
    run_dir = Path(run_dir)
    if ckpt not in (checkpoints.LAST, checkpoints.BEST):
        raise ConfigError("ckpt", ckpt, "use last (the final epoch) or best (the epoch with the highest val/acc)")
    cfg = job_config(run_dir, overrides)
    path = run_dir / "checkpoints" / f"{ckpt}.ckpt"
    if not path.is_file():
        kept = sorted(p.name for p in path.parent.glob("*.ckpt")) or ["none"]
        raise FileNotFoundError(
            f"ckpt={ckpt}: {path} does not exist (this job kept: {', '.join(kept)}); train with "
            f"keep_checkpoint={ckpt} to keep it"
        )
    job, parts = settings(cfg), build(cfg)
    trainer = parts.trainer(logger=False, callbacks=[], enable_checkpointing=False)
    metrics = run_test(trainer, parts.module, parts.datamodule, path, mc_samples=job.mc_samples, seed=job.seed)
    epoch = checkpoints.safe_load(path)["epoch"]
    out = Job(run_dir).write(
        {"checkpoint": str(path), "epoch": epoch, "overrides": list(overrides), "metrics": metrics},
        name=f"eval_{ckpt}.json",
    )
    return metrics, out
