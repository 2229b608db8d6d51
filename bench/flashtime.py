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
that make it the boot partition.

  python bench/flashtime.py [--chart bench/flashtime.png] [--sizes 65536,1525536,3145728]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "host"), str(ROOT / "sim")]

from espsim.parttable import Part  # noqa: E402
from mpota import images, simdev  # noqa: E402

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

DEVICE = """
import json, espsim.device
from ota.writer import OTA
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
with open({image!r}, "rb") as f, OTA(verbose=False, length={length}, backend={backend!r}) as ota:
    ota.write_file(f)
c1 = counts()
print(json.dumps(dict((k, c1[k] - c0[k]) for k in c1)))
"""

STRATEGIES = [
    # (label, runtime, heap, backend, length known)
    ("pure, 4 KB buffer (the original project's writes)", "micropython", "200K", "pure", True),
    ("pure, 64 KB buffer (heap >= 256 KB free)", "micropython", "2M", "pure", True),
    ("native, length known", "cpython-native", "2M", "native", True),
    ("native, length unknown", "cpython-native", "2M", "native", False),
]
REFERENCES = [
    ("ESP-IDF OTA_WITH_SEQUENTIAL_WRITES, 4 KB writes", 0xFFFFFFFE),
    ("ESP-IDF OTA_SIZE_UNKNOWN (whole slot erased)", 0xFFFFFFFF),
]


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


def _device(work: Path, length: int) -> tuple[Path, Path]:
    flash = work / f"flash-{length}.bin"
    simdev.create(
        flash, images.app_image("v1.22.0", size=600_032), table=TABLE, flash_size=8 << 20
    )
    img = work / f"image-{length}.bin"
    img.write_bytes(images.app_image("v1.23.0", size=length))
    return flash, img


def run_strategy(
    work: Path, length: int, runtime: str, heap: str, backend: str, known: bool
) -> dict:
    flash, img = _device(work, length)
    code = DEVICE.format(
        kinds=KINDS, image=str(img), length=length if known else 0, backend=backend
    )
    r = simdev.run(flash, code, runtime, heap=heap, timeout=600, cwd=work)
    if r.returncode != 0:
        raise RuntimeError(f"{runtime} update failed:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_reference(work: Path, length: int, image_size: int) -> dict:
    """ESP-IDF's own API through the host backend (libota_host.so), writes of 4 KB."""
    flash, img = _device(work, length)
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
    data = img.read_bytes()
    for pos in range(0, len(data), 4096):
        chunk = data[pos : pos + 4096]
        assert lib.esp_ota_write(handle.value, chunk, len(chunk)) == 0
    assert lib.esp_ota_end(handle.value) == 0
    assert lib.esp_ota_set_boot_partition(part) == 0
    c = dict(zip(KINDS, lib.ota_host_counts().contents, strict=True))
    lib.ota_host_close()
    return c


def measure(sizes=SIZES) -> list[dict]:
    subprocess_ok = (ROOT / "build" / "c" / "libota_host.so").exists()
    if not subprocess_ok:
        raise SystemExit("build the host library first: make -C tests/c")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        for length in sizes:
            for label, runtime, heap, backend, known in STRATEGIES:
                c = run_strategy(work, length, runtime, heap, backend, known)
                rows.append({"size": length, "strategy": label, **c})
            for label, image_size in REFERENCES:
                c = run_reference(work, length, image_size)
                rows.append({"size": length, "strategy": label, **c})
            rows.append({"size": length, "strategy": "floor", **floor(length)})
    for r in rows:
        r["seconds"] = model(r)
        r["kbps"] = r["size"] / 1024 / r["seconds"]
        r["ratio"] = r["seconds"] / model(floor(r["size"]))
    return rows


def table(rows: list[dict]) -> str:
    head = (
        "| image | backend / strategy | 4 KB erases | 64 KB erases | pages | KB programmed "
        "| KB read | modeled s | KB/s | x floor |"
    )
    out = [head, "|" + "---|" * 10]
    for r in rows:
        out.append(
            f"| {r['size']:,} | {r['strategy']} | {r['erase_4k']} | {r['erase_64k']} | "
            f"{r['program_pages']} | {r['program_bytes'] / 1024:.0f} | "
            f"{r['read_bytes'] / 1024:.0f} | {r['seconds']:.2f} | {r['kbps']:.0f} | "
            f"{r['ratio']:.2f} |"
        )
    return "\n".join(out)


def chart(rows: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted({r["size"] for r in rows})
    labels = [r["strategy"] for r in rows if r["size"] == sizes[0]]
    fig, ax = plt.subplots(figsize=(10, 5))
    width = 0.8 / len(labels)
    for i, label in enumerate(labels):
        ys = [
            next(r["seconds"] for r in rows if r["size"] == s and r["strategy"] == label)
            for s in sizes
        ]
        ax.bar([x + i * width for x in range(len(sizes))], ys, width, label=label)
    ax.set_xticks([x + width * (len(labels) - 1) / 2 for x in range(len(sizes))])
    ax.set_xticklabels([f"{s:,} bytes" for s in sizes])
    ax.set_ylabel("modeled flash time (s), W25Q32JV typical")
    ax.set_title("OTA update: modeled flash time per backend and erase strategy")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default=",".join(str(s) for s in SIZES))
    p.add_argument("--chart", help="write a PNG chart of the modeled seconds")
    p.add_argument("--json", help="write the rows as JSON")
    a = p.parse_args(argv)
    rows = measure([int(s) for s in a.sizes.split(",")])
    print(table(rows))
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))
    if a.chart:
        chart(rows, a.chart)
        print(f"chart: {a.chart}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
