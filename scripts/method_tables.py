"""Write the methods tables of README.md and docs/methods/README.md from the methods' specs.

Each table sits between ``<!-- begin: <name> (scripts/method_tables.py) -->`` and ``<!-- end: <name> -->``
and is generated from :func:`dropout_lab.dropout.spec.specs` (one :class:`~dropout_lab.dropout.spec.MethodSpec`
per method, docs/methods/README.md "Adding a method"); nothing between the markers is edited by hand.

    python scripts/method_tables.py           # rewrite the tables
    python scripts/method_tables.py --check   # exit 1, naming the files, when a table and the specs disagree

``tests/test_method_tables.py`` runs the check.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from dropout_lab.dropout import spec

ROOT = Path(__file__).resolve().parents[1]


def cell(text: object) -> str:
    """One Markdown table cell: ``None`` as ``null``, booleans as yes/no, ``|`` escaped."""
    shown = "null" if text is None else ("yes" if text else "no") if isinstance(text, bool) else str(text)
    return shown.replace("|", "\\|")


def table(header: list[str], rows: list[list[object]]) -> str:
    """A Markdown table (no trailing newline)."""
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell(c) if i > 1 else str(c) for c in row) + " |" for i, row in enumerate(lines))


def link(key: str) -> str:
    return f"[`{key}`]({key}.md)"


def sites(method: spec.MethodSpec) -> str:
    """Where ``dropout=<key>`` puts the method by default: its fixed ``sites``, else its ``default_sites``."""
    return method.default_sites if method.sites == "default" else method.sites


def methods_table() -> str:
    """README.md: key, source, default sites, what it does."""
    rows = [[f"`{k}`", m.source, sites(m), m.summary] for k, m in spec.specs().items()]
    return table(["key", "source", "sites", "what it does"], rows)


def p_table() -> str:
    """docs/methods/README.md: what ``p`` means, whether it is a rate, and what is recorded."""
    rows = [[link(k), m.p_meaning, m.p_is_rate, m.drop_fraction, m.p_eq] for k, m in spec.specs().items()]
    return table(["key", "`p` means (`p_meaning`)", "`p_is_rate`", "recorded `drop_fraction`", "recorded `p_eq`"], rows)


def arguments_table() -> str:
    """docs/methods/README.md: every argument of every method (``p`` included), default, what it accepts, tuning range."""
    rows = [
        [
            link(k),
            f"`{name}`",
            f"`{cell(arg.default)}`",
            arg.accepts.wants,
            f"`{arg.tune}`" if arg.tune else "",
            arg.doc,
        ]
        for k, m in spec.specs().items()
        for name, arg in m.arguments().items()
    ]
    return table(["key", "argument", "default", "accepts", "Optuna range", "meaning"], rows)


#: file -> {table name: renderer}
TABLES: dict[str, dict[str, Callable[[], str]]] = {
    "README.md": {"methods": methods_table},
    "docs/methods/README.md": {"p": p_table, "arguments": arguments_table},
}


def rendered(text: str, tables: dict[str, Callable[[], str]], path: str) -> str:
    """``text`` with each named table replaced by its rendering.

    Raises:
        ValueError: if a table's markers are missing from ``text``.
    """
    for name, render in tables.items():
        pattern = re.compile(
            rf"(<!-- begin: {name} \(scripts/method_tables.py\) -->\n)(?:.*?\n)?(<!-- end: {name} -->)", re.DOTALL
        )
        if not pattern.search(text):
            raise ValueError(
                f"{path}: no markers for table {name!r} (<!-- begin: {name} (scripts/method_tables.py) -->)"
            )
        text = pattern.sub(lambda m, r=render: m.group(1) + r() + "\n" + m.group(2), text)
    return text


def stale(root: Path = ROOT) -> list[str]:
    """The files under ``root`` whose generated tables disagree with the specs."""
    return [p for p, tables in TABLES.items() if rendered((root / p).read_text(), tables, p) != (root / p).read_text()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only check; exit 1 if a table is stale")
    args = parser.parse_args()
    if args.check:
        bad = stale()
        for path in bad:
            print(f"{path}: methods tables disagree with the specs; run python scripts/method_tables.py")
        return int(bool(bad))
    for path, tables in TABLES.items():
        (ROOT / path).write_text(rendered((ROOT / path).read_text(), tables, path))
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
