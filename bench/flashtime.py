"""Modeled flash time of an OTA update, per backend and erase strategy.

Each update runs for real against the simulated ESP32, which counts the flash operations it
issues (4 KB sector erases, 64 KB block erases, page programs, bytes read); the time is those
counts times a flash datasheet's typical figures:

  Winbond W25Q32JV datasheet (rev. I, section 9.6, AC electrical characteristics), typical:
    tSE  sector erase (4 KB)      45 ms
    tBE2 block erase (64 KB)     150 ms
    tPP  page program (256 B)    0.4 ms
  Reads: the ESP32's flash at 40 MHz DIO (ESP-IDF's default) moves 80 Mbit/s = 10 MB/s.

The floor is the fewest operations that can write and verify the image: the cheapest erase
cover of its length, one program per page, one read of it, plus the otadata sector and page
that make it the boot partition. "reads" is how many times the image was read back from flash
(read bytes / image length): with verify=True the pure backend reads it twice (its read-back
check, then esp_ota_set_boot_partition()'s esp_image_verify(), which ESP-IDF always does), the
native one three times (esp_ota_end() verifies it as well); the floor counts one.

Rows: updates from a file (4 KB-aligned reads) per backend and erase strategy, ESP-IDF's own
API for reference; the seed image through ota.update.from_file() over HTTP (127.0.0.1, mpota's
server) with the device's TCP stack handing over 536, 1460 or 4096 bytes per read
($ESPSIM_RECV_MAX); a steady-state device (it has taken an update before: both otadata entries
valid, so esp_ota_begin() erases the inactive one, ESP-IDF v5.5 with rollback on); an update
cut at 50 % (abort(), as after a dropped connection) and resumed by a new OTA(start=, erased=)
with what the first one reported (both runs counted); a power cut at 50 % of from_file() over
HTTP, then the same call again, which resumes from its state file (both runs counted: a cut
leaves nothing known erased past the saved offset, so the resumed run erases its block again
and programs and downloads again what came after it); the original project's code on the
simulator when $ORIGINAL_OTA_DIR names a checkout of glenn20/micropython-esp32-ota (else its
writes modeled: 4 KB writeblocks, as ESP-IDF's sequential-writes row); realistic images
(host/mpota/images.py) and, when $MPOTA_REFERENCE names it, the real v1.28.0 ESP32-C3 image.
Then the end-to-end time model: download + flash per link speed.

  python bench/flashtime.py [--chart bench/flashtime.png] [--sizes 65536,1525536,3145728]
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import sys
import tempfile
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "host"), str(ROOT / "sim"), str(ROOT / "bench")]

import tables  # noqa: E402
from espsim.parttable import Part  # noqa: E402
from mpota import images, serve, simdev  # noqa: E402

T_SECTOR, T_BLOCK, T_PAGE = 0.045, 0.150, 0.0004  # seconds (W25Q32JV typical)
READ_RATE = 10e6  # bytes/s
KINDS = ("erase_4k", "erase_64k", "program_pages", "program_bytes", "read_ops", "read_bytes")
SIZES = (65536, images.SEED_IMAGE_SIZE, 3145728)

# 8 MB flash with two 4 MB - 64 KB slots, so that a 3 MB image fits.
TABLE = [
    Part(1, 2, 0x9000, 0x4000, "nvs"),
    Part(1, 0, 0xD000, 0x2000, "otadata"),
    Part(1, 1, 0xF000, 0x1000, "phy_init"),
    Part(0, 0x10, 0x10000, 0x3F0000, "ota_0"),
    Part(0, 0x11, 0x400000, 0x3F0000, "ota_1"),
]

COUNTS = """
import json, espsim.device
dev = espsim.device.current()
def counts():
    c = dict(dev.flash.counts)
    try:
        import _ota
        for k, v in zip({kinds!r}, _ota.flash_counts()):
            c[k] += v
    except ImportError:
        pass
    return c
c0 = counts()
"""
REPORT = """
c1 = counts()
print(json.dumps(dict((k, c1[k] - c0[k]) for k in c1)))
"""
FROM_FILE = """
from ota.writer import OTA
with open({image!r}, "rb") as f, OTA(verbose=False, length={length}, backend={backend!r}) as ota:
    ota.write_file(f)
"""
FROM_HTTP = """
import ota.update
ota.update.from_file({url!r}, length={length}, verbose=False, reboot=False, backend={backend!r},
                     resume=False)
"""
# The first half of an update (from 0 to about 50 %), cut there: what is on flash stays.
FIRST_HALF = """
from ota.writer import OTA
ota = OTA(verbose=False, length={length}, backend={backend!r})
buf = memoryview(bytearray(4096))
left = {half}
with open({image!r}, "rb") as f:
    while left:
        n = f.readinto(buf[: min(4096, left)])
        ota.write(buf[:n])
        left -= n
print("flashed", ota.flashed // 4096 * 4096)
ota.abort()
print("erased", ota.erased if ota.flashed % 4096 == 0 else 0)
"""
SECOND_HALF = """
from ota.writer import OTA
with open({image!r}, "rb") as f, OTA(verbose=False, length={length}, backend={backend!r},
                                      start={start}, erased={erased}) as ota:
    f.seek({start})
    ota.write_file(f)
"""
# A power cut at 50 % of a download (progress() resets the board: no abort(), the state file as
# the last 64 KB step saved it), then the same call again: it resumes from the state file.
CUT_HTTP = """
import json, machine, ota.update
def cut(n, total):
    if n >= {half}:
        c1 = counts()
        print(json.dumps(dict((k, c1[k] - c0[k]) for k in c1)))
        machine.reset()
ota.update.from_file({url!r}, sha={sha!r}, length={length}, verbose=False, reboot=False,
                     backend={backend!r}, progress=cut)
"""
RESUME_HTTP = """
import ota.update
ota.update.from_file({url!r}, sha={sha!r}, length={length}, verbose=False, reboot=False,
                     backend={backend!r})
"""
ORIGINAL = """
from ota.update import OTA
with open({image!r}, "rb") as f, OTA(verbose=False, reboot=False) as ota:
    ota.from_stream(f)
"""

# (label, runtime, heap, backend, length known)
STRATEGIES = [
    ("pure, 4 KB buffer (80K heap: no 64 KB block)", "micropython", "80K", "pure", True),
    ("pure, 64 KB buffer (192K heap)", "micropython", "192K", "pure", True),
    ("native, length known", "cpython-native", "2M", "native", True),
    ("native, length unknown", "cpython-native", "2M", "native", False),
]
REFERENCES = [
    ("ESP-IDF OTA_WITH_SEQUENTIAL_WRITES, 4 KB writes", 0xFFFFFFFE),
    ("ESP-IDF OTA_SIZE_UNKNOWN (whole slot erased)", 0xFFFFFFFF),
]
READ_SIZES = (536, 1460, 4096)
# The backends on the user paths: pure with the 64 KB buffer an ESP32's heap can give, native.
USER = [
    ("pure 64 KB", "micropython", "192K", "pure"),
    ("native", "cpython-native", "2M", "native"),
]


def native_runtime() -> str:
    """micropython-native (the real binding) when a MicroPython with _ota is at hand."""
    return "micropython-native" if os.environ.get("OTA_MICROPYTHON") else "cpython-native"


def model(c: dict) -> float:
    return (
        c["erase_4k"] * T_SECTOR
        + c["erase_64k"] * T_BLOCK
        + c["program_pages"] * T_PAGE
        + c["read_bytes"] / READ_RATE
    )


def floor(length: int) -> dict:
    blocks, rem = divmod(length, 65536)
    cover = min(
        (blocks + (1 if rem else 0), 0),
        (blocks, -(-rem // 4096)),
        key=lambda bs: bs[0] * T_BLOCK + bs[1] * T_SECTOR,
    )
    return {
        "erase_64k": cover[0],
        "erase_4k": cover[1] + 1,
        "program_pages": -(-length // 256) + 1,
        "program_bytes": length + 32,
        "read_ops": 0,
        "read_bytes": length,
    }


def _device(work: Path, name: str, image: bytes, chip: str = "esp32") -> tuple[Path, Path]:
    flash = work / f"flash-{name}.bin"
    old = images.app_image("v1.22.0", size=600_032, chip=chip)
    simdev.create(flash, old, table=TABLE, flash_size=8 << 20, chip=chip)
    img = work / f"image-{name}.bin"
    img.write_bytes(image)
    return flash, img


def _run(flash: Path, code: str, runtime: str, heap: str = "2M", **kw) -> str:
    kw.setdefault("cwd", flash.parent)  # the device's state files stay in its work directory
    r = simdev.run(flash, code, runtime, heap=heap, timeout=900, **kw)
    if r.returncode != 0:
        raise RuntimeError(f"{runtime} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def _counts(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def _add(a: dict, b: dict) -> dict:
    return {k: a[k] + b[k] for k in a}


def run_strategy(work, image, runtime, heap, backend, known, chip="esp32") -> dict:
    flash, img = _device(work, "file", image, chip)
    code = FROM_FILE.format(image=str(img), length=len(image) if known else 0, backend=backend)
    return _counts(_run(flash, COUNTS.format(kinds=KINDS) + code + REPORT, runtime, heap))


def run_http(work, image, runtime, heap, backend, read_size, base) -> dict:
    flash, img = _device(work, "http", image)
    code = FROM_HTTP.format(url=f"{base}/{img.name}", length=len(image), backend=backend)
    out = _run(
        flash,
        COUNTS.format(kinds=KINDS) + code + REPORT,
        runtime,
        heap,
        environ={"ESPSIM_RECV_MAX": str(read_size)},
    )
    return _counts(out)


def run_steady(work, image, runtime, heap, backend) -> dict:
    flash, img = _device(work, "steady", image)
    prep = FROM_FILE.format(image=str(img), length=len(image), backend=backend)
    simdev.run(flash, prep + "import machine\nmachine.reset()\n", runtime, heap=heap, cwd=work)
    _run(flash, "import ota\nota.stop_rollback()\n", runtime, heap)
    code = FROM_FILE.format(image=str(img), length=len(image), backend=backend)
    return _counts(_run(flash, COUNTS.format(kinds=KINDS) + code + REPORT, runtime, heap))


def run_resumed(work, image, runtime, heap, backend) -> dict:
    """Cut at 50 % and resumed: both runs' operations."""
    flash, img = _device(work, "resume", image)
    first = FIRST_HALF.format(
        image=str(img), length=len(image), backend=backend, half=len(image) // 2
    )
    out = _run(flash, COUNTS.format(kinds=KINDS) + first + REPORT, runtime, heap)
    start = int(out.split("flashed ")[1].split()[0])
    erased = int(out.split("erased ")[1].split()[0])
    second = SECOND_HALF.format(
        image=str(img), length=len(image), backend=backend, start=start, erased=erased
    )
    c2 = _counts(_run(flash, COUNTS.format(kinds=KINDS) + second + REPORT, runtime, heap))
    return _add(_counts(out), c2)


def run_cut(work, image, runtime, heap, backend, base) -> dict:
    """Power cut at 50 % of a download over HTTP, then resumed from the state file: both runs'
    operations (the first run's up to the cut)."""
    flash, img = _device(work, "cut", image)
    cwd = work / "cut"
    cwd.mkdir(exist_ok=True)
    args = dict(
        url=f"{base}/{img.name}",
        sha=hashlib.sha256(image).hexdigest(),
        length=len(image),
        backend=backend,
    )
    code = COUNTS.format(kinds=KINDS) + CUT_HTTP.format(half=len(image) // 2, **args)
    r = simdev.run(flash, code, runtime, heap=heap, timeout=900, cwd=cwd)
    if "espsim: hard reset" not in r.stdout + r.stderr:
        raise RuntimeError(f"the cut did not happen:\n{r.stdout}{r.stderr}")
    c1 = json.loads([x for x in r.stdout.splitlines() if x.startswith("{")][-1])
    code = COUNTS.format(kinds=KINDS) + RESUME_HTTP.format(**args) + REPORT
    out = _run(flash, code, runtime, heap, cwd=cwd)
    if (cwd / "ota_resume.json").exists():
        raise RuntimeError("the resumed update left its state file")
    return _add(c1, _counts(out))


def run_original(work, image, checkout: Path) -> dict:
    """glenn20/micropython-esp32-ota's own code (its mip/ota package) on the simulator."""
    flash, img = _device(work, "original", image)
    code = COUNTS.format(kinds=KINDS) + ORIGINAL.format(image=str(img)) + REPORT
    r = simdev.run(
        flash, code, "micropython", heap="2M", timeout=900, extra_path=[checkout], cwd=work
    )
    if r.returncode != 0:
        raise RuntimeError(f"the original project's code failed:\n{r.stdout}{r.stderr}")
    return _counts(r.stdout)


def run_reference(work: Path, image: bytes, image_size: int) -> dict:
    """ESP-IDF's own API through the host backend (libota_host.so), writes of 4 KB."""
    flash, img = _device(work, "ref", image)
    lib = ctypes.CDLL(str(ROOT / "build" / "c" / "libota_host.so"))
    lib.ota_host_counts.restype = ctypes.POINTER(ctypes.c_uint32 * 6)
    lib.esp_partition_find_first.restype = ctypes.c_void_p
    lib.esp_ota_begin.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    lib.esp_ota_write.argtypes = [ctypes.c_uint32, ctypes.c_char_p, ctypes.c_size_t]
    lib.esp_ota_set_boot_partition.argtypes = [ctypes.c_void_p]
    assert lib.ota_host_open(str(flash).encode()) == 0
    part = lib.esp_partition_find_first(0, 0x11, None)
    handle = ctypes.c_uint32()
    lib.ota_host_reset_counts()
    assert lib.esp_ota_begin(part, image_size, ctypes.byref(handle)) == 0
    for pos in range(0, len(image), 4096):
        chunk = image[pos : pos + 4096]
        assert lib.esp_ota_write(handle.value, chunk, len(chunk)) == 0
    assert lib.esp_ota_end(handle.value) == 0
    assert lib.esp_ota_set_boot_partition(part) == 0
    c = dict(zip(KINDS, lib.ota_host_counts().contents, strict=True))
    lib.ota_host_close()
    return c


def _row(rows: list, image: str, case: str, size: int, c: dict) -> None:
    rows.append({"image": image, "case": case, "size": size, **c})


def realistic() -> list[tuple[str, str, bytes]]:
    """Realistic images: images.py's ESP32 and ESP32-C3 v1.24.0 (their own sizes), and the
    real v1.28.0 ESP32-C3 image when $MPOTA_REFERENCE names its directory."""
    out = [
        (chip, f"{chip} v1.24.0 (images.py)", images.app_image("v1.24.0", chip=chip))
        for chip in ("esp32", "esp32c3")
    ]
    ref = os.environ.get("MPOTA_REFERENCE") or os.environ.get("OTA_REFERENCE_DIR")
    if ref:
        bins = sorted(Path(ref).glob("*.bin"))
        if bins:
            out.append(("esp32c3", f"{bins[0].name} (real)", bins[0].read_bytes()))
    return out


def measure(sizes=SIZES, full=True, user_size=images.SEED_IMAGE_SIZE) -> list[dict]:
    """Every row: `sizes` through the file strategies and ESP-IDF's references; with `full`,
    the user paths (HTTP read sizes, steady state, resumed, original project) for the seed
    image, and the realistic images."""
    if not (ROOT / "build" / "c" / "libota_host.so").exists():
        raise SystemExit("build the host library first: make -C tests/c")
    native_rt = native_runtime()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for length in sizes:
            name = f"{length:,} bytes" + (" (seed)" if length == images.SEED_IMAGE_SIZE else "")
            image = images.app_image("v1.23.0", size=length)
            for label, runtime, heap, backend, known in STRATEGIES:
                rt = native_rt if backend == "native" else runtime
                c = run_strategy(work, image, rt, heap, backend, known)
                _row(rows, name, "file: " + label, length, c)
            for label, image_size in REFERENCES:
                _row(rows, name, label, length, run_reference(work, image, image_size))
            _row(rows, name, "floor", length, floor(length))
        if full:
            seed = images.app_image("v1.23.0", size=user_size)
            name = f"{len(seed):,} bytes" + (
                " (seed)" if user_size == images.SEED_IMAGE_SIZE else ""
            )
            server = serve.start(str(work))
            base = "http://127.0.0.1:%d" % server.server_address[1]
            try:
                for label, runtime, heap, backend in USER:
                    rt = native_rt if backend == "native" else runtime
                    for n in READ_SIZES:
                        c = run_http(work, seed, rt, heap, backend, n, base)
                        _row(
                            rows, name, f"HTTP from_file(), {n}-byte reads: {label}", len(seed), c
                        )
            finally:
                server.shutdown()
            for label, runtime, heap, backend in USER:
                rt = native_rt if backend == "native" else runtime
                c = run_steady(work, seed, rt, heap, backend)
                _row(rows, name, f"steady-state device: {label}", len(seed), c)
                c = run_resumed(work, seed, rt, heap, backend)
                _row(rows, name, f"cut at 50 % and resumed: {label}", len(seed), c)
            server = serve.start(str(work))
            base = "http://127.0.0.1:%d" % server.server_address[1]
            try:
                for label, runtime, heap, backend in USER:
                    rt = native_rt if backend == "native" else runtime
                    # The state file and the cut's own code need more heap than 192K leaves
                    # beside a 64 KB buffer in both runs.
                    heap = "256K" if backend == "pure" else heap
                    c = run_cut(work, seed, rt, heap, backend, base)
                    _row(
                        rows, name, f"power cut at 50 %, from_file() again: {label}", len(seed), c
                    )
            finally:
                server.shutdown()
            checkout = os.environ.get("ORIGINAL_OTA_DIR")
            if checkout:
                c = run_original(work, seed, Path(checkout) / "mip")
                _row(rows, name, "original project's code (ORIGINAL_OTA_DIR)", len(seed), c)
            else:
                c = run_reference(work, seed, REFERENCES[0][1])
                _row(rows, name, "original project (modeled: 4 KB writeblocks)", len(seed), c)
            for chip, label, image in realistic() if user_size == images.SEED_IMAGE_SIZE else ():
                name = f"{label}, {len(image):,} bytes"
                for slabel, runtime, heap, backend, known in STRATEGIES[1:3]:
                    rt = native_rt if backend == "native" else runtime
                    c = run_strategy(work, image, rt, heap, backend, known, chip)
                    _row(rows, name, "file: " + slabel, len(image), c)
                _row(rows, name, "floor", len(image), floor(len(image)))
    for r in rows:
        r["seconds"] = model(r)
        r["kbps"] = r["size"] / 1024 / r["seconds"]
        r["ratio"] = r["seconds"] / model(floor(r["size"]))
        r["reads"] = r["read_bytes"] / r["size"]
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| image | path | 4 KB erases | 64 KB erases | pages | reads | modeled s | KB/s "
        "| x floor |"
    )
    out = [head, "|" + "---|" * 9]
    for r in rows:
        out.append(
            f"| {r['image']} | {r['case']} | {r['erase_4k']} | {r['erase_64k']} | "
            f"{r['program_pages']} | {r['reads']:.2f} | {r['seconds']:.2f} | "
            f"{r['kbps']:.0f} | {r['ratio']:.2f} |"
        )
    return "\n".join(out)


# --- End-to-end: download + flash -----------------------------------------------------------
LINKS = (("50 KB/s", 50 * 1024), ("250 KB/s", 250 * 1024), ("1 MB/s", 1 << 20))
# Patched (delta) updates: another piece of work. When it lands, PATCH_SIZE(image) gives the
# bytes a patch for `image` downloads, and the patched rows print; until then they say so.
PATCH_SIZE = None


def end_to_end(rows: list[dict], image: bytes) -> str:
    """Download + flash time of the seed image per link speed. On an ESP32 the two do not
    overlap in this code: one buffer, read then written (writeblocks() or esp_ota_write()
    blocks the task that reads the socket); only lwIP's receive window (TCP_WND, 5,760 bytes
    by default in ESP-IDF v5.5) fills meanwhile. So time = download + flash, with the flash
    time of the HTTP 1460-byte-read rows."""
    comp = len(zlib.compress(image, 9))
    flash = {
        label: next(
            r["seconds"]
            for r in rows
            if r["case"] == f"HTTP from_file(), 1460-byte reads: {label}"
        )
        for label, *_ in USER
    }
    out = [
        f"End-to-end time model, {len(image):,}-byte seed image (zlib -9: {comp:,} bytes; "
        "decompression CPU not counted): download + flash, sequential",
        "",
        "| update | link | download s | flash s (pure 64 KB / native) | total s (pure / native) |",
        "|---|---|---|---|---|",
    ]
    kinds = [("full", len(image)), ("compressed (zlib)", comp)]
    if PATCH_SIZE is not None:
        kinds.append(("patched", PATCH_SIZE(image)))
    for kind, nbytes in kinds:
        for link, rate in LINKS:
            dl = nbytes / rate
            fp, fn = flash["pure 64 KB"], flash["native"]
            out.append(
                f"| {kind} | {link} | {dl:.1f} | {fp:.1f} / {fn:.1f} | "
                f"{dl + fp:.1f} / {dl + fn:.1f} |"
            )
    if PATCH_SIZE is None:
        out.append(
            "| patched | - | (patches: [Delta updates](#delta-updates-patches-that-resume), "
            "bench/delta.py) | | |"
        )
    return "\n".join(out)


def chart(rows: list[dict], path: str) -> bool:
    plt = tables.pyplot(path)
    if plt is None:
        return False
    seed = [r for r in rows if "(seed)" in r["image"] and r["case"] != "floor"]
    seed.sort(key=lambda r: r["seconds"])
    fig, ax = plt.subplots(figsize=(11, 0.32 * len(seed) + 1.5))
    ys = range(len(seed))
    ax.barh(list(ys), [r["ratio"] for r in seed], color="tab:blue")
    ax.set_yticks(list(ys))
    ax.set_yticklabels([r["case"] for r in seed], fontsize=7)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("modeled flash time / floor (W25Q32JV typical), seed image 1,525,536 bytes")
    ax.set_title("OTA update paths against the flash floor")
    for y, r in zip(ys, seed, strict=True):
        ax.text(
            r["ratio"], y, f" {r['ratio']:.2f}x, {r['seconds']:.1f} s", va="center", fontsize=7
        )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    return True


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    p.add_argument("--quick", action="store_true", help="the file rows only")
    p.add_argument("--chart", help="write a PNG chart of the modeled seconds")
    p.add_argument("--json", help="write the rows as JSON")
    p.add_argument(
        "--out",
        type=Path,
        help="write the README's tables (flashtime.md, flashtime-e2e.md) into this directory "
        "(default: build/bench, for a run with the default sizes; bench/tables.py copies them)",
    )
    a = p.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    rows = measure(sizes, full=not a.quick)
    main_table = table(rows)
    print(main_table)
    e2e = None
    if not a.quick:
        e2e = end_to_end(rows, images.app_image("v1.23.0", size=images.SEED_IMAGE_SIZE))
        print()
        print(e2e)
    out = a.out or (tables.bench_out() if tuple(sizes) == SIZES and not a.quick else None)
    if out:
        tables.write("flashtime", main_table, out)
        if e2e:
            tables.write("flashtime-e2e", e2e, out)
        print(f"tables: {out}/flashtime*.md")
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.chart:
        if chart(rows, a.chart):
            print(f"chart: {a.chart}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
