"""Delta updates measured: for pairs of images (host/mpota/pairs.py: a modeled version-string
change, frozen-module change and release's worth of code changes, applied to a realistic ESP32
image and, when present, to the real MicroPython v1.28.0 ESP32-C3 build in
$MPOTA_REFERENCE or ../shared/reference/firmware), the bytes on the air for the patch (MPZ1:
detools sequential bsdiff in raw deflate with checkpoints every 64 KB) against the full image
(zlib -9, and MPZ1), the flash operations of each update run for real on the simulated ESP32
(pure backend, CPython, from a local directory), and the modeled end-to-end time at 50 KB/s,
250 KB/s and 1 MB/s: bytes on the air / rate + the flash time of bench/flashtime.py's model
(W25Q32JV typical erase/program times, reads at 10 MB/s). CPU time (inflate, patch) is not in
the model: see the appliers' instruction counts per MB printed at the end (bench/applier.py).

  python bench/delta.py
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "host"), str(ROOT / "sim"), str(ROOT / "bench")]

from flashtime import KINDS, model  # noqa: E402
from mpota import delta, images, manifest, pairs, simdev  # noqa: E402

RATES = (("50 KB/s", 50e3), ("250 KB/s", 250e3), ("1 MB/s", 1e6))

DEVICE = """
import json, espsim.device, ota.update
dev = espsim.device.current()
c0 = dict(dev.flash.counts)
ota.update.from_json({manifest!r}, reboot=False, verbose=False, delta={delta!r})
c1 = dev.flash.counts
print(json.dumps(dict((k, c1[k] - c0[k]) for k in c1)))
"""


def reference() -> Path | None:
    for d in (os.environ.get("MPOTA_REFERENCE"), ROOT.parent / "shared/reference/firmware"):
        if d and (Path(d) / "micropython-v1.28.0-esp32c3.bin").exists():
            return Path(d) / "micropython-v1.28.0-esp32c3.bin"
    return None


def run(work: Path, old: bytes, new: bytes, use_delta: bool) -> dict:
    chip = manifest.chip_of(old)
    flash = work / "flash.bin"
    simdev.create(flash, old, chip=chip)
    code = DEVICE.format(manifest=str(work / "manifest.json"), delta=use_delta)
    r = simdev.run(flash, code, "cpython", cwd=work, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"update failed:\n{r.stdout}{r.stderr}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def measure(label: str, old: bytes, kind: str) -> dict:
    new = pairs.variant(old, kind)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "old.bin").write_bytes(old)
        (work / "new.bin").write_bytes(new)
        m = manifest.make(work / "new.bin", compression="mpz", sources=[work / "old.bin"])
        m.pop("version")  # a modeled rebuild may keep its version
        manifest.dump(m, work / "manifest.json")
        patch = m["patches"][0]["length"]
        full = m["compressed_length"]
        ops_patch = run(work, old, new, True)
        ops_full = run(work, old, new, False)
    return {
        "pair": f"{label}: {kind}",
        "image": len(new),
        "patch": patch,
        "zlib": len(zlib.compress(new, 9)),
        "mpz": full,
        "ops_patch": ops_patch,
        "ops_full": ops_full,
    }


def ops(c: dict) -> str:
    return "%d+%d erases, %d programs, %d KB read" % (
        c["erase_64k"],
        c["erase_4k"],
        c["program_pages"],
        c["read_bytes"] // 1024,
    )


def speed() -> list[str]:
    """Instructions per MB of image of each applier (bench/applier.py: callgrind; the C one
    through the _ota binding when a MicroPython build with it is at hand), over a frozen-module
    patch of a 1 MB image."""
    from applier import counts

    old = images.app_image("v1.24.0", 1_048_576)
    new = pairs.variant(old, "frozen")
    return counts(old, new, delta.detools_patch(old, new))


def main() -> int:
    bases = [("realistic ESP32 image", images.app_image("v1.24.0"))]
    ref = reference()
    if ref:
        bases.append(("real v1.28.0 ESP32-C3 build", ref.read_bytes()))
    rows = []
    t0 = time.time()
    for label, old in bases:
        for kind in pairs.KINDS:
            rows.append(measure(label, old, kind))
    print("| pair (modeled change) | image | patch on the air | full image, zlib -9 / MPZ1 |")
    print("|---|---|---|---|")
    for r in rows:
        print(
            "| %s | %d B | %d B (%.2f %%) | %d B / %d B |"
            % (r["pair"], r["image"], r["patch"], 100 * r["patch"] / r["image"], r["zlib"],
               r["mpz"])
        )  # fmt: skip
    print()
    print("| pair | flash, patch | flash, full | " + " | ".join(n for n, _ in RATES) + " |")
    print("|---|---|---|" + "---|" * len(RATES))
    for r in rows:
        fp, ff = model(r["ops_patch"]), model(r["ops_full"])
        times = [
            "%.1f s / %.1f s" % (r["patch"] / rate + fp, r["mpz"] / rate + ff) for _, rate in RATES
        ]
        print(
            "| %s | %s (%.1f s) | %s (%.1f s) | %s |"
            % (r["pair"], ops(r["ops_patch"]), fp, ops(r["ops_full"]), ff, " | ".join(times))
        )
    print()
    print("End-to-end times: patch / full MPZ1 image, air time + modeled flash time.")
    print()
    for line in speed():
        print(line)
    print("(%.0f s)" % (time.time() - t0))
    assert set(KINDS) <= set(rows[0]["ops_patch"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
