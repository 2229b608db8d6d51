"""README.md's measured figures are the benches' output (issue 16): every table of its
"Performance" and "Delta updates" sections sits between `<!-- bench:NAME -->` and
`<!-- /bench -->`, as bench/tables.py copies it from build/bench/NAME.md, which the bench wrote
as it printed it. Here (fast: the full benches run in `make bench` / `make powercut`): the
blocks are there and well formed, what a bench writes is what it prints, the deterministic
figures agree with a re-run at the same or a small size, and the figures of each block hold
together (totals, ratios, differences). tests/test_bench.py's quick power-cut campaign checks
the flash-operation counts of the power-cut blocks."""

import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import flashtime, netcut, tables  # noqa: E402

NAMES = {
    "fleet",
    "fleet-real",
    "flashtime",
    "flashtime-e2e",
    "cpu",
    "delta",
    "delta-e2e",
    "delta-binaries",
    "applier",
    "powercut",
    "netcut",
}


def readme_block(name: str) -> str:
    return tables.blocks((ROOT / "README.md").read_text())[name]


def rows(text: str, first: str = "") -> list[list[str]]:
    """The cells of the table rows of `text` (header and rule left out) whose first cell
    starts with `first`."""
    out = []
    for line in text.splitlines():
        if not line.startswith("| ") or line.startswith("|---"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0].startswith(first):
            out.append(cells)
    return out


def num(cell: str) -> float:
    return float(cell.replace(",", "").split()[0])


def test_every_bench_block_is_in_the_readme_once():
    assert set(tables.blocks((ROOT / "README.md").read_text())) == NAMES
    for name in NAMES:
        assert rows(readme_block(name)), name  # each holds a table


def test_tables_replace_only_the_named_blocks_and_refuse_a_broken_marker(tmp_path):
    text = (
        "a\n<!-- bench:x -->\nold\n<!-- /bench -->\nb\n<!-- bench:y -->\nkept\n<!-- /bench -->\n"
    )
    new, changed = tables.replace(text, {"x": "new\n| 1 |"})
    assert new == text.replace("old\n", "new\n| 1 |\n") and changed == ["x"]
    assert tables.replace(new, {"x": "new\n| 1 |\n"}) == (new, [])
    with pytest.raises(ValueError, match="without its"):
        tables.blocks(text.replace("<!-- /bench -->\nb", "b", 1))
    with pytest.raises(ValueError, match="twice"):
        tables.blocks(text.replace("bench:y", "bench:x"))
    # the script: --check names a block that differs, the update writes it, then --check is quiet
    readme = tmp_path / "R.md"
    readme.write_text(text)
    tables.write("x", "fresh", tmp_path / "out")
    args = ["--readme", str(readme), "--dir", str(tmp_path / "out")]
    assert tables.main([*args, "--check"]) == 1
    assert tables.main(args) == 0
    assert "<!-- bench:x -->\nfresh\n<!-- /bench -->" in readme.read_text()
    assert "kept" in readme.read_text() and tables.main([*args, "--check"]) == 0


def test_flashtime_writes_what_it_prints_and_its_rows_are_the_readme_rows(tmp_path, capsys):
    # The 65,536-byte rows of the README, measured again (counts of the simulator: the same on
    # every run), through the bench's own main() and the file it writes.
    assert flashtime.main(["--sizes", "65536", "--quick", "--out", str(tmp_path)]) == 0
    written = (tmp_path / "flashtime.md").read_text()
    assert written.strip() in capsys.readouterr().out
    readme = readme_block("flashtime")
    assert written.splitlines()[0] == readme.splitlines()[0]  # the header
    mine = [line for line in written.splitlines()[2:]]
    assert len(mine) == len(flashtime.STRATEGIES) + len(flashtime.REFERENCES) + 1
    for line in mine:
        assert line in readme.splitlines(), line


def test_flashtime_end_to_end_block_follows_from_the_flash_rows():
    readme = readme_block("flashtime")
    e2e = readme_block("flashtime-e2e")
    seed = {r[1]: r for r in rows(readme, "1,525,536 bytes (seed)")}
    fp = num(seed["HTTP from_file(), 1460-byte reads: pure 64 KB"][6])
    fn = num(seed["HTTP from_file(), 1460-byte reads: native"][6])
    got = rows(e2e, "full") + rows(e2e, "compressed")
    assert len(got) == 2 * len(flashtime.LINKS)
    for kind, _link, dl, flash, total in got:
        assert flash == f"{fp:.1f} / {fn:.1f}", kind
        assert total == f"{num(dl) + fp:.1f} / {num(dl) + fn:.1f}", kind


def test_cpu_block_holds_together():
    cpu = readme_block("cpu")
    per_mb = [r for r in rows(cpu, "native,") + rows(cpu, "pure,") if len(r) == 8]
    assert [r[0].split(",")[0] for r in per_mb] == ["native", "pure", "pure"]
    native_own = num(per_mb[0][4])
    for r in per_mb:
        every, sha, own = num(r[2]), num(r[3]), num(r[4])
        assert every - sha == own and own > 0, r  # the first column less SHA-256
        assert r[5] == f"{own / native_own:.2f}", r
        assert num(r[7]) > 0, r  # the simulated ESP-IDF and flash, apart


def test_delta_sizes_are_those_of_a_rerun(tmp_path):
    # The first row (a version-string change of the realistic image): patch and full-image
    # sizes, made again as the bench makes them (deterministic).
    from mpota import images, manifest, pairs

    old = images.app_image("v1.24.0")
    new = pairs.variant(old, pairs.KINDS[0])
    row = rows(readme_block("delta"), f"realistic ESP32 image: {pairs.KINDS[0]}")[0]
    (tmp_path / "old.bin").write_bytes(old)
    (tmp_path / "new.bin").write_bytes(new)
    m = manifest.make(tmp_path / "new.bin", compression="mpz", sources=[tmp_path / "old.bin"])
    assert row[1] == f"{len(new)} B"
    assert row[2].startswith(f"{m['patches'][0]['length']} B ")
    assert row[3] == f"{len(zlib.compress(new, 9))} B / {m['compressed_length']} B"
    e2e = rows(readme_block("delta-e2e"), row[0])[0]
    assert e2e[1].count("programs") == 1  # the flash operations of the patched update


def test_power_cut_blocks_hold_together():
    pc = rows(readme_block("powercut"), "pure") + rows(readme_block("powercut"), "native")
    net = rows(readme_block("netcut"), "micropython") + rows(readme_block("netcut"), "cpython")
    assert len(pc) == 6 and len(net) == 12
    for r in pc:
        ops, tried = int(r[3]), int(r[4])
        if r[1] != "1,525,536":
            assert tried == ops + 1, r  # every operation, and none (the update completes)
        assert r[5:] == ["1", "0", "0", "0"], r
    for r in net:
        assert int(r[4]) == len(netcut.cut_points(int(r[3]), 29)), r  # every 29th, first, last
        assert r[5:8] == ["0", "0", "0"], r
    total = sum(int(r[4]) for r in pc + net)
    line = next(x for x in readme_block("netcut").splitlines() if "cut points tried, " in x)
    assert line == f"{total:,} cut points tried, 0 bricks, 0 failures in all"


def test_applier_block_names_each_applier():
    text = readme_block("applier")
    got = [r[0] for r in rows(text, "C,") + rows(text, "Python,")]
    assert len(got) == 4 and got[0].startswith("C,"), got
    for r in rows(text, "Python,"):
        assert r[2] == "- (no viper emitter in this port)" or num(r[2]) > 0, r
