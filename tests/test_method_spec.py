"""The method spec is the one declaration of a method (docs/methods/README.md, "Adding a method"): the config
node, the checks, the search space and the generated tables derive from it, and a method kept outside the
package (the worked example of the docs, copied from the page) gets the contract suite and trains."""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import re
import subprocess
import sys

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from conftest import CONF, DATA_ROOT, ROOT, SMOKE, run_cli
from dropout_lab.checks import BadValue
from dropout_lab.dropout import spec
from dropout_lab.dropout.spec import Arg, MethodSpec, register
from dropout_lab.dropout.standard import StandardDropout

tables_path = ROOT / "scripts" / "method_tables.py"
tables_spec = importlib.util.spec_from_file_location("method_tables", tables_path)
method_tables = importlib.util.module_from_spec(tables_spec)
tables_spec.loader.exec_module(method_tables)


def test_generated_tables_agree_with_the_specs():
    assert method_tables.stale() == [], "run python scripts/method_tables.py"


def test_a_changed_spec_makes_its_tables_stale(monkeypatch):
    """The check can fail: a summary edited in a spec and not in README.md is caught."""
    standard = spec.get("standard")
    monkeypatch.setitem(spec._REGISTRY, "standard", dataclasses.replace(standard, summary="something else"))
    assert method_tables.stale() == ["README.md"]


def test_composed_dropout_nodes_are_the_spec_nodes():
    """``dropout=<key>`` composes the spec's node (from Hydra's ConfigStore; no YAML per method), and a preset
    YAML changes only what it names."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        for key, method in spec.specs().items():
            node = OmegaConf.to_container(compose("config", overrides=[f"dropout={key}"]).dropout)
            assert node == method.node(), key
        preset = OmegaConf.to_container(compose("config", overrides=["dropout=lrp_paper"]).dropout)
    assert preset == spec.get("lrp").node() | {"p": 0.5}


def test_search_space_comes_from_the_spec():
    assert spec.get("dropblock").search_space() == {
        "dropout.p": "interval(0.02, 0.3)",
        "dropout.block_size": "choice(3, 5, 7)",
    }
    assert spec.get("none").search_space() == {"seed": "range(0, 20)"}


def test_check_names_the_argument_and_the_closest_name():
    method = spec.get("dropblock")
    with pytest.raises(BadValue, match=re.escape("dropout.block_size=4: must be an odd integer >= 1")):
        method.check("block_size", 4)
    with pytest.raises(BadValue, match="did you mean dropout.block_size"):
        method.check("blocksize", 3)
    with pytest.raises(BadValue, match="did you mean dropblock"):
        spec.get("dropblok")


def test_register_refuses_a_taken_key_and_a_default_its_check_refuses():
    class Other(StandardDropout):
        pass

    taken = dataclasses.replace(spec.get("standard"), cls=Other)
    with pytest.raises(ValueError, match="taken by dropout_lab.dropout.standard.StandardDropout"):
        register(taken)
    bad = dataclasses.replace(spec.get("standard"), key="bad_default", p=Arg(1.5, spec.RATE, "drop probability"))
    with pytest.raises(
        ValueError, match=re.escape("bad_default: its default dropout.p=1.5: must be a number in [0, 1)")
    ):
        register(bad)
    assert "bad_default" not in spec._REGISTRY and isinstance(spec.get("standard"), MethodSpec)


def worked_example() -> str:
    """The Python block of docs/methods/README.md's "Adding a method", as printed there."""
    page = (ROOT / "docs" / "methods" / "README.md").read_text()
    section = page[page.index("## Adding a method") :]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_a_method_outside_the_package_gets_the_contract_suite_and_trains(tmp_path):
    """The docs' worked example, written to a temporary directory and named in ``DROPOUT_LAB_METHODS``: every
    contract test runs on it and passes, ``train.py dropout=scaled`` trains and records it, and a value its
    spec refuses is refused before training with the spec's phrase."""
    (tmp_path / "scaled.py").write_text(worked_example())
    env = {
        **os.environ,
        "DROPOUT_LAB_METHODS": "scaled",
        "DROPOUT_LAB_DATA": DATA_ROOT,
        "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src"), str(ROOT / "tests")]),
    }
    suite = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/test_method_contract.py",
            "-k",
            "scaled",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    passed = re.search(r"(\d+) passed", suite.stdout)
    assert suite.returncode == 0 and passed and int(passed.group(1)) >= 8, suite.stdout[-3000:]

    run = tmp_path / "run"
    proc = run_cli([*SMOKE, "dropout=scaled", "dropout.scale=1.5", f"hydra.run.dir={run}"], tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = OmegaConf.load(run / "metrics.json")
    assert summary.status == "ok" and summary.method_info.p_meaning == "drop probability"
    assert abs(summary.drop_fraction - 0.5) < 0.05
    bad = [*SMOKE, "dropout=scaled", "dropout.scale=0", f"hydra.run.dir={tmp_path / 'bad'}"]
    refused = run_cli(bad, tmp_path, env=env)
    assert refused.returncode == 1 and "dropout.scale=0: must be a number > 0" in refused.stderr
