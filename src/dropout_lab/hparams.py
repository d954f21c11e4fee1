"""TensorBoard HParams for a sweep: one column set, one metric set and discrete domains for every run.

TensorBoard's HParams plugin takes the first ``_hparams_/experiment`` summary it finds in the log
folder as the table's columns and metrics (``tensorboard/plugins/hparams/backend_context.py``), so a
sweep must have exactly one. :class:`~hydra_plugins.dropout_lab_sweeper.dedup_sweeper.DedupSweeper`
derives every job's hyper-parameters before launching and calls :func:`write_spec`: the columns and metrics of the whole
sweep go to ``<sweep>/hparams_spec.json`` and, as the one experiment summary, to an event file at the
sweep root. Each job then writes only its session (:func:`log_session`) with the spec's columns.
Without a spec (a single run, another sweeper) a run writes its session alone and TensorBoard infers
the table from all sessions. Written with TensorBoard's ``summary_v2`` protobuf API (no TensorFlow).

Nothing is written as a scalar here: no placeholder point at step 0; the metrics are the scalars
the runs log anyway (``hp_metric``, ``val/acc``, ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tensorboard.plugins.hparams import summary_v2 as hp

from dropout_lab import compat
from dropout_lab import metrics as M
from dropout_lab.summary import HPARAM_METRICS, VARIANT_METRICS, flat_hparams

#: written by the sweeper at the sweep root; read by every job of the sweep
SPEC_FILE = "hparams_spec.json"


def metric_names(configs: list[Mapping[str, Any]]) -> list[str]:
    """The metrics the runs with job configs ``configs`` log: :data:`~dropout_lab.summary.HPARAM_METRICS`, the
    Monte-Carlo ones if any run has ``eval.mc_samples`` > 0, and the variant ones
    (:data:`~dropout_lab.summary.VARIANT_METRICS`) if any run's method has evaluation variants."""
    from hydra.utils import get_class

    from dropout_lab.dropout.base import DropoutMethod

    names = list(HPARAM_METRICS)
    if any(int((c.get("eval") or {}).get("mc_samples", 0)) > 0 for c in configs):
        names += M.MC  # what analysis.evaluate returns with mc_samples > 0
    if any(get_class(c["dropout"]["_target_"]).eval_variants is not DropoutMethod.eval_variants for c in configs):
        names += VARIANT_METRICS
    return names


def build_spec(configs: list[Mapping[str, Any]]) -> dict[str, Any]:
    """:func:`spec_of` the runs with resolved job configs ``configs`` (plain containers): their
    :func:`~dropout_lab.summary.flat_hparams` rows and :func:`metric_names`."""
    return spec_of([flat_hparams(c) for c in configs], metric_names(configs))


def spec_of(rows: list[dict[str, Any]], metrics: list[str]) -> dict[str, Any]:
    """Columns, their values and the metrics of runs with HParams ``rows``
    (:func:`~dropout_lab.summary.flat_hparams`).

    Returns:
        ``{"hparams": {column: sorted values}, "metrics": metrics}``: the keys every run has and every
        method/model argument (``dropout.<k>``, ``model.<k>``) that takes more than one value among
        the runs that have it (an argument only one method has, at one value, is no column); a
        column whose values mix types holds strings.
    """
    base = [k for k in rows[0] if "." not in k]  # method, p, ..., epochs: every run has them
    args = {k for r in rows for k in r if "." in k}  # dropout.<arg>, model.<arg>
    varying = sorted(k for k in args if len({repr(r[k]) for r in rows if k in r}) > 1)  # swept, not one method's own
    hparams = {}
    for key in (*base, *varying):
        values = {r[key] for r in rows if key in r}
        if len({type(v) for v in values}) > 1:
            values = {str(v) for v in values}
        hparams[key] = sorted(values)
    return {"hparams": hparams, "metrics": list(metrics)}


def merge_specs(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Union of two specs (a second sweep into the same folder): columns, values and metrics."""
    hparams = dict(old["hparams"])
    for key, values in new["hparams"].items():
        both = set(hparams.get(key, [])) | set(values)
        hparams[key] = sorted({str(v) for v in both} if len({type(v) for v in both}) > 1 else both)
    return {"hparams": hparams, "metrics": list(dict.fromkeys([*old["metrics"], *new["metrics"]]))}


def write_spec(sweep_dir: Path, spec: dict[str, Any]) -> Path:
    """Write ``spec`` (:func:`spec_of`, merged with the folder's earlier spec, if any) to
    ``sweep_dir/hparams_spec.json``, and the HParams experiment summary built from it to
    ``sweep_dir/events.out.tfevents.*.hparams`` (replacing an earlier one)."""
    from torch.utils.tensorboard import SummaryWriter

    sweep_dir = Path(sweep_dir)
    path = sweep_dir / SPEC_FILE
    if path.exists():
        spec = merge_specs(json.loads(path.read_text()), spec)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(spec, indent=1))
    for old in sweep_dir.glob("events.out.tfevents.*.hparams"):
        old.unlink()
    columns = [hp.HParam(k, hp.Discrete(v) if v else None) for k, v in spec["hparams"].items()]
    with SummaryWriter(str(sweep_dir), filename_suffix=".hparams") as writer:
        compat.tb_file_writer(writer).add_summary(
            hp.hparams_config_pb(columns, [hp.Metric(m) for m in spec["metrics"]])
        )
    return path


def _sweep_spec() -> dict[str, Any] | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    path = Path(HydraConfig.get().sweep.dir) / SPEC_FILE
    return json.loads(path.read_text()) if path.exists() else None


def log_session(logger, row: dict[str, Any], trial_id: str, spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write this run's HParams session start into ``logger``'s event file.

    Args:
        logger: a Lightning ``TensorBoardLogger``; any other logger gets ``log_hyperparams`` of
            :func:`~dropout_lab.summary.flat_hparams` (without metrics, so without placeholders).
        row: the run's HParams row (:func:`~dropout_lab.summary.flat_hparams` of its resolved config).
        trial_id: the session's name in TensorBoard (the job's folder).
        spec: columns (:func:`build_spec`); default: the sweep's :data:`SPEC_FILE` in a multirun that
            has one, else every key of :func:`~dropout_lab.summary.flat_hparams`.

    Returns:
        the session's hyper-parameters (the spec's columns this run has; a string column gets ``str``).
    """
    from pytorch_lightning.loggers import TensorBoardLogger

    if not isinstance(logger, TensorBoardLogger):
        logger.log_hyperparams(row)
        return row
    spec = spec or _sweep_spec()
    values = row
    if spec is not None:
        values = {
            k: str(row[k]) if domain and isinstance(domain[0], str) else row[k]
            for k, domain in spec["hparams"].items()
            if k in row
        }
    file_writer = compat.tb_file_writer(logger.experiment)
    file_writer.add_summary(hp.hparams_pb(values, trial_id=trial_id))
    file_writer.flush()
    return values
