"""What a run reports: the flat hyper-parameters for TensorBoard's HParams tab, a per-epoch history,
and the contents of the ``metrics.json`` summary that the sweep report reads (written and read through
:class:`dropout_lab.job.Job`)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.trainer.states import TrainerFn

from dropout_lab import metrics as M
from dropout_lab.dropout import spec

#: metrics declared to the HParams plugin (the dashboard shows the latest value of each scalar tag)
HPARAM_METRICS = (
    M.HP_METRIC,
    M.VAL_ACC,
    M.VAL_LOSS,
    *(M.test(k) for k in M.TEST_SCORES),
    M.test("acc", M.TEST_BEST),
    M.DROP_FRACTION,
    M.P_EQ,
)
#: the parts of a job's time in ``metrics.json``'s ``timings`` (seconds): set-up of the data, the model (with its
#: methods) and the trainer (loggers, callbacks); ``fit`` (training and validation, checkpoint writes excluded);
#: ``checkpoint_io`` (writing checkpoints); ``test`` (every test pass and the predictions file); ``summary``
#: (building ``metrics.json``). ``wall_seconds`` minus their sum is the rest (the resume check, folders, loggers' close)
TIMINGS = ("setup_data", "setup_model", "setup_trainer", "fit", "checkpoint_io", "test", "summary")
#: per-example test predictions of a job (:func:`dropout_lab.train.run_test`)
PREDICTIONS_FILE = "predictions.npz"
#: declared too when a method of the sweep has evaluation variants (EDropout: full network F, docs/methods/edropout.md)
VARIANT_METRICS = (M.variant("acc", "full"), M.variant("loss", "full"))
#: dropout config keys that are columns of their own (or not arguments)
_NOT_ARGS = ("_target_", "_partial_", "name", "p", "sites")


def target_name(node: Mapping | None) -> str:
    """Short name of a config node's ``_target_`` (``torch.optim.Adam`` -> ``adam``), ``none`` if absent."""
    return _target((node or {}).get("_target_"))


def _scalar(value: Any) -> bool | int | float | str:
    """An HParams cell: numbers, booleans and strings as they are, anything else (lists, None) as JSON text."""
    return value if isinstance(value, (bool, int, float, str)) else json.dumps(value)


def _target(value: Any) -> str:
    return value.rsplit(".", 1)[-1].lower() if value else "none"


#: the HParams columns every run has: column -> (config key, default when the key is absent, conversion)
COLUMNS: dict[str, tuple[str, Any, Any]] = {
    "method": ("dropout.name", None, str),
    "p": ("dropout.p", 0.0, float),
    "sites": ("dropout.sites", "default", str),
    "model": ("model._target_", None, _target),
    "dataset": ("dataset.name", None, str),
    "seed": ("seed", None, int),
    "optimizer": ("optimizer._target_", None, _target),
    "lr": ("optimizer.lr", None, float),
    "weight_decay": ("optimizer.weight_decay", 0.0, float),
    "scheduler": ("scheduler._target_", None, _target),
    "batch_size": ("dataset.batch_size", None, int),
    "epochs": ("trainer.max_epochs", None, int),
}


def hparam_column(key: str) -> str | None:
    """The HParams column of dotted config key ``key`` (``dropout.p`` -> ``p``, ``dropout.block_size`` ->
    itself, ``model.hidden_sizes`` -> itself), None for a key that is no column."""
    for column, (source, _, _) in COLUMNS.items():
        if source == key:
            return column
    group, _, arg = key.partition(".")
    return (
        key
        if group in ("dropout", "model") and arg and "." not in arg and arg not in _NOT_ARGS and arg != "_target_"
        else None
    )


def hparam_cell(key: str, value: Any) -> Any:
    """The cell of config key ``key`` (its :func:`hparam_column`) holding ``value``, converted as :func:`flat_hparams` does.

    Raises:
        TypeError, ValueError: for a value the column's conversion refuses (``dropout.p=abc``)."""
    column = hparam_column(key)
    return COLUMNS[column][2](value) if column in COLUMNS else _scalar(value)


def flat_hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """The hyper-parameters of a run with resolved config ``config`` (plain containers, as
    :func:`dropout_lab.config.settings` reads it) as scalar HParams cells (no None: TensorBoard would turn a
    numeric column into strings).

    Keys: the :data:`COLUMNS` (method, p, sites, model, dataset, seed, optimizer, lr, weight_decay, scheduler,
    batch_size, epochs: every run), then ``dropout.<arg>`` and ``model.<arg>`` for the method's and the
    model's other arguments (lists and null as JSON text, e.g. ``model.hidden_sizes: "[800, 800]"``).

    Raises:
        TypeError, ValueError: for a value a column's conversion refuses (``dropout.p=abc``).
    """
    row = {column: convert(_select(config, key, default)) for column, (key, default, convert) in COLUMNS.items()}
    for group in ("dropout", "model"):
        node = config.get(group) or {}
        row |= {f"{group}.{k}": _scalar(v) for k, v in node.items() if hparam_column(f"{group}.{k}") == f"{group}.{k}"}
    return row


def _select(node: Any, key: str, default: Any) -> Any:
    """The value at dotted ``key`` in nested mappings ``node``; ``default`` where the path is absent."""
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node


def _number(value: Any) -> float:
    return float(value.item() if hasattr(value, "item") else value)


class History(pl.Callback):
    """Records per-epoch validation metrics, training time and throughput for the summary.

    Attributes:
        epochs: one dict per validation epoch with ``epoch``, ``step``, ``val/acc``, ``val/loss`` and
            any ``train/*``, ``dropout/*`` and ``actvar/*`` metric logged so far.
        train_seconds: wall time spent in training batches (validation, test and the other callbacks'
            epoch-end logging excluded: train.py lists this callback first), seconds.
        train_samples: training samples processed.
        first_step_time: ``time.time()`` at the first training batch (for start-up latency).
        starts: the epoch each attempt of the job started training at (``[0]`` for a job that ran once;
            ``[0, 3]`` after a resume at epoch 3; two zeros would mean a checkpoint was thrown away).
    """

    PREFIXES = ("train", "val", "dropout", "actvar")

    def __init__(self) -> None:
        self.epochs: list[dict[str, float]] = []
        self.train_seconds = 0.0
        self.train_samples = 0
        self.first_step_time: float | None = None
        self.starts: list[int] = []
        self._t0: float | None = None
        self._pending: dict[str, float] = {}  # this epoch's validation metrics, kept for a checkpoint

    def state_dict(self) -> dict:
        """Saved in Lightning checkpoints, so a resumed run keeps the epochs before the kill."""
        return {
            "epochs": self.epochs,
            "train_seconds": self.train_seconds,
            "train_samples": self.train_samples,
            "first_step_time": self.first_step_time,
            "starts": self.starts,
            "_pending": self._pending,
        }

    def load_state_dict(self, state_dict: dict) -> None:
        self.__dict__.update(state_dict)

    def on_train_start(self, trainer, pl_module):
        self.starts = [*self.starts, trainer.current_epoch]  # after a resume's restore: the epoch it continues at

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch > 0:
            self._snapshot(trainer, trainer.current_epoch - 1)
        self._t0 = time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.first_step_time is None:
            self.first_step_time = time.time()
        self.train_samples += len(batch[1])

    def _stop_clock(self) -> None:
        if self._t0 is not None:
            self.train_seconds += time.perf_counter() - self._t0
            self._t0 = None

    def on_validation_epoch_start(self, trainer, pl_module):
        if trainer.state.fn == TrainerFn.FITTING:  # validation inside fit (the stage is already "validate")
            self._stop_clock()

    def on_validation_end(self, trainer, pl_module):
        # runs before ModelCheckpoint's save (Lightning orders checkpoint callbacks last)
        self._pending = self._metrics(trainer)

    def on_train_epoch_end(self, trainer, pl_module):
        self._stop_clock()

    def on_fit_end(self, trainer, pl_module):
        if not self.epochs or self.epochs[-1]["epoch"] < trainer.current_epoch - 1:
            self._snapshot(trainer, trainer.current_epoch - 1)

    def _snapshot(self, trainer: pl.Trainer, epoch: int) -> None:
        # taken after the epoch's hooks have all logged (Lightning calls callbacks before the module)
        self.epochs.append({"epoch": epoch, "step": trainer.global_step, **self._pending, **self._metrics(trainer)})
        self._pending = {}

    def _metrics(self, trainer: pl.Trainer) -> dict[str, float]:
        return {k: _number(v) for k, v in trainer.callback_metrics.items() if k.split("/")[0] in self.PREFIXES}


def method_info(node: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{"p_meaning", "p_is_rate"}`` of the method a ``dropout`` node names (its spec; docs/methods/README.md),
    or None for an unknown method (a job that failed on that is still summarised)."""
    try:
        method = spec.get(node["name"])
    except Exception:  # noqa: BLE001 - the job's own error is reported; the summary must still be written
        return None
    return {"p_meaning": method.p_meaning, "p_is_rate": method.p_is_rate}


def build_summary(
    config: Mapping[str, Any],
    status: str,
    history: History | None,
    metrics: dict[str, float],
    wall_seconds: float,
    error: str | None = None,
    trace: str | None = None,
    timings: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The run summary written to ``metrics.json`` for a run with resolved config ``config`` (plain containers).

    Fields: status (ok | failed | interrupted), error (one line: the root cause,
    :func:`~dropout_lab.errors.headline`), traceback (the whole chain), hparams (:func:`flat_hparams`; empty for a config it cannot
    convert, such as ``dropout.p=abc``), config (the resolved config),
    best_val_acc, final val/test metrics, ``drop_fraction`` and ``p_eq`` (means over all training
    steps and sites), ``method_info`` (:func:`method_info`), epochs, wall_seconds, train_seconds,
    train_samples_per_s, first_step_time, starts (:class:`History`), timings (:data:`TIMINGS`, seconds; the parts
    a failed job reached) and the per-epoch history. Accuracies are fractions in [0, 1].
    """
    epochs = history.epochs if history else []
    train_seconds = history.train_seconds if history else 0.0
    try:
        hparams = flat_hparams(config)
    except (TypeError, ValueError):  # a job refused for a bad value (dropout.p=abc): no hparams, the config as given
        hparams = {}
    return {
        "status": status,
        "error": error,
        "traceback": trace,
        "hparams": hparams,
        "metrics": metrics,
        "best_val_acc": metrics.get(M.VAL_ACC_BEST),
        "test_acc": metrics.get(M.test("acc")),
        "drop_fraction": metrics.get(M.DROP_FRACTION),
        "p_eq": metrics.get(M.P_EQ),
        "method_info": method_info(config.get("dropout") or {}),
        "epochs": len(epochs),
        "wall_seconds": wall_seconds,
        "timings": timings or {},
        "train_seconds": train_seconds,
        "train_samples_per_s": (history.train_samples / train_seconds) if history and train_seconds > 0 else None,
        "first_step_time": history.first_step_time if history else None,
        "starts": history.starts if history else [],
        "history": epochs,
        "config": dict(config),
    }
