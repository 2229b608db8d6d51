"""The README's measured figures come from the benches: each bench writes the tables it prints
as markdown into build/bench/NAME.md (bench_out(), or --out DIR), and this script replaces each
block of README.md between `<!-- bench:NAME -->` and `<!-- /bench -->` with build/bench/NAME.md
(`make bench` and `make powercut` run it after their benches). A block whose file is absent
(its bench did not run) stays as it is, and is named.

  python bench/tables.py [--dir build/bench] [--readme README.md] [--check]

--check changes nothing: it lists the blocks that differ from their files (exit 1 if any).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "build" / "bench"
BLOCK = re.compile(r"^<!-- bench:([\w-]+) -->\n(.*?)^<!-- /bench -->$", re.M | re.S)


def bench_out() -> Path:
    """Where the benches write their tables: $BENCH_OUT, else build/bench."""
    return Path(os.environ.get("BENCH_OUT") or OUT)


def write(name: str, text: str, out: Path | None = None) -> Path:
    """Write one README block's contents (markdown, as the bench printed it)."""
    d = out or bench_out()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"{name}.md"
    path.write_text(text.rstrip("\n") + "\n")
    return path


def pyplot(path: str):
    """matplotlib.pyplot for a chart into `path`, or None (said) when matplotlib is not
    installed: the tables are printed and written all the same."""
    try:
        import matplotlib
    except ImportError:
        print(f"chart {path} skipped: matplotlib is not installed (pip install -e '.[bench]')")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def blocks(text: str) -> dict[str, str]:
    """{name: contents} of the README's bench blocks; ValueError on a name used twice or a
    marker left open."""
    found: dict[str, str] = {}
    for m in BLOCK.finditer(text):
        if m.group(1) in found:
            raise ValueError(f"bench block {m.group(1)!r} appears twice")
        found[m.group(1)] = m.group(2)
    opened = re.findall(r"^<!-- bench:([\w-]+) -->$", text, re.M)
    closed = re.findall(r"^<!-- /bench -->$", text, re.M)
    if len(opened) != len(found) or len(closed) != len(found):
        raise ValueError("a <!-- bench:NAME --> marker without its <!-- /bench --> (or reverse)")
    return found


def replace(text: str, tables: dict[str, str]) -> tuple[str, list[str]]:
    """The README with each block whose name is in `tables` replaced; (text, names changed)."""
    blocks(text)  # well-formed
    changed = []

    def sub(m: re.Match) -> str:
        name = m.group(1)
        if name not in tables:
            return m.group(0)
        body = tables[name].rstrip("\n") + "\n"
        if body != m.group(2):
            changed.append(name)
        return f"<!-- bench:{name} -->\n{body}<!-- /bench -->"

    return BLOCK.sub(sub, text), changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=None)
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--check", action="store_true")
    a = p.parse_args(argv)
    d = a.dir or bench_out()
    text = a.readme.read_text()
    names = blocks(text)
    tables = {n: (d / f"{n}.md").read_text() for n in names if (d / f"{n}.md").exists()}
    missing = sorted(set(names) - set(tables))
    new, changed = replace(text, tables)
    if a.check:
        for n in changed:
            print(f"{a.readme.name}: block {n} differs from {d / n}.md")
        return 1 if changed else 0
    if changed:
        a.readme.write_text(new)
    print(f"{a.readme.name}: {len(changed)} bench block(s) updated from {d}: "
          f"{', '.join(changed) or 'none'}")  # fmt: skip
    if missing:
        print(f"not measured in this run (left as they were): {', '.join(missing)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
