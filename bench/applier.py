"""CPU cost of the delta-patch appliers: instructions per MB of output image, counted by
valgrind's callgrind (repeatable, unlike times on a shared machine), over one patch (a
frozen-module change of a 1 MB image, made by host/mpota/delta.py; bench/delta.py's speed()):

- C: the core's applier (usermod/ota_native/ota_delta.c) through the binding, _ota.Patch, in a
  MicroPython unix port built with usermod/ota_native ($OTA_MICROPYTHON with its symbols, or
  built from $MICROPY_DIR as bench/cpu.py builds it). Without one, the core alone through the
  C test harness (tests/c/test_ota_delta --apply, ota_delta_run() only, gcc -O2), labelled so.
  The old image is read through esp_partition_read() from the simulated flash: the host
  backend's instructions (the simulated ESP-IDF and flash) are kept apart, from the call graph.
- Python: python/ota/delta.py's Patch with each byte-add: under @micropython.viper (what the
  package uses where the emitter has it), in big integers (SWAR: the package's fallback where
  it has no viper), and a plain loop (for comparison), on the same unix build if there is one,
  else on the PyPI unix port. The old image is read from a file with readinto() (4 KB blocks).

The patch comes from memory (io.BytesIO of the uncompressed detools patch: inflating is not
counted) and the image goes into a 4 KB buffer. Per MB = (a run with the apply loop - the same
run without it) / MB of image, so that start-up and set-up cancel. Also the core's cost and its
reads of the old image with an old-image buffer of 256 B to 4 KB (OTA_DELTA_OLD_BUF; the
harness built for each).

  python bench/applier.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "host"), str(ROOT / "sim"), str(ROOT / "bench")]

import cpu  # noqa: E402
from mpota import delta, images, pairs, simdev  # noqa: E402

MB = 1 << 20
BUFS = (256, 1024, 4096)

DEVICE = """
import io, sys
sys.path.insert(0, {ota!r})
import delta as d
patch = open({d!r} + "/p.patch", "rb").read()
class Part:
    def __init__(self, name):
        self.f = open(name, "rb")
    def readblocks(self, n, buf):
        self.f.seek(n * 4096)
        self.f.readinto(buf)
if {which!r} == "C":
    import _ota
    p = _ota.Patch(io.BytesIO(patch), "ota_0", {olen}, {n})
else:
    d._add = getattr(d, {which!r})
    p = d.Patch(io.BytesIO(patch), Part({d!r} + "/old.bin"), {olen}, {n})
buf = bytearray(4096)
made = 0
while {apply}:
    k = p.readinto(buf)
    if not k:
        break
    made += k
print("made", made)
"""


def _run(cmd: list[str], env: dict, work: Path, name: str, code: str) -> tuple[int, int, str]:
    """(instructions, of them in the host backend, stdout) of one device run."""
    script = work / f"{name}.py"
    script.write_text("import simboot\n" + code)
    out = work / f"{name}.out"
    r = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd, str(script)],
        capture_output=True, text=True, env=env, cwd=work,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"{name} failed under valgrind:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    idf = cpu.split(out, native=True, hashes=False)[0] if name.startswith("C") else 0
    return cpu.total(out), idf, r.stdout


def _per_mb(cmd, env, work, which, olen, n) -> tuple[float, float]:
    """(instructions per MB of image, of them in the host backend per MB) of one applier."""
    fmt = dict(ota=str(ROOT / "python" / "ota"), d=str(work), which=which, olen=olen, n=n)
    t0, i0, _ = _run(cmd, env, work, f"{which}-base", DEVICE.format(apply=False, **fmt))
    t1, i1, out = _run(cmd, env, work, f"{which}-apply", DEVICE.format(apply=True, **fmt))
    if f"made {n}" not in out:
        raise RuntimeError(f"{which}: the applier made no whole image: {out}")
    return (t1 - t0) * MB / n, (i1 - i0) * MB / n


def _harness(work: Path, olen: int, old_buf: int, build: Path) -> tuple[float, float, int]:
    """The core alone (tests/c harness built with OTA_DELTA_OLD_BUF=old_buf): (instructions in
    ota_delta_run() per MB, of them in the host backend per MB, old-image reads per MB)."""
    env = dict(os.environ, CFLAGS=f"-O2 -g -DOTA_DELTA_OLD_BUF={old_buf}")
    subprocess.run(
        ["make", "-s", "-C", str(ROOT / "tests" / "c"), f"BUILD={build}",
         f"{build}/test_ota_delta"], check=True, env=env,
    )  # fmt: skip
    out = work / f"harness-{old_buf}.out"
    r = subprocess.run(
        ["valgrind", "--tool=callgrind", "--toggle-collect=ota_delta_run",
         f"--callgrind-out-file={out}", str(build / "test_ota_delta"), "--apply", str(work),
         "p"], capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        raise RuntimeError(f"test_ota_delta --apply failed:\n{r.stdout}{r.stderr[-2000:]}")
    n = (work / "p.new").stat().st_size
    reads = int(r.stdout.split(" reads of the old image")[0].rsplit(None, 1)[-1])
    idf = cpu.split(out, native=True, hashes=False)[0]
    return cpu.total(out) * MB / n, idf * MB / n, reads * MB // n


def counts(old: bytes, new: bytes, patch: bytes) -> list[str]:
    if not shutil.which("valgrind"):
        return ["applier instructions: valgrind is needed (apt-get install valgrind)"]
    lines = [
        "Appliers, instructions per MB of image (callgrind; a %d-byte frozen-module patch of a "
        "%d-byte image, uncompressed, from memory; simulated flash reads kept apart):"
        % (len(patch), len(new)),
        "",
        "| applier | interpreter | per MB | simulated ESP-IDF + flash per MB (apart) |",
        "|---|---|---|---|",
    ]
    # The same directory in every run (its path is in the scripts: see bench/cpu.py's WORK)
    work = cpu.WORK.parent / "applier"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        (work / "old.bin").write_bytes(old)
        (work / "p.patch").write_bytes(patch)
        (work / "p.new").write_bytes(new)
        (work / "kinds").write_text("p\n")
        flash = work / "flash.bin"
        simdev.create(flash, old)
        binary, why = cpu.native_micropython()
        if binary:
            interp = "MicroPython %s + _ota" % cpu._version(binary)
            env = cpu.quiet_env(simdev.env(flash, "micropython-native"))
            cmd = simdev.command("micropython", "16M")
            cmd[0] = binary
            t, idf = _per_mb(cmd, env, work, "C", len(old), len(new))
            lines.append(
                f"| C, _ota.Patch (ota_delta.c) | {interp} | {t - idf:,.0f} | {idf:,.0f} |"
            )
        else:
            t, idf, _ = _harness(work, len(old), 1024, work / "c-1024")
            interp = "none: the core in tests/c's harness, gcc -O2 (%s)" % why
            lines.append(f"| C, ota_delta_run() alone | {interp} | {t - idf:,.0f} | {idf:,.0f} |")
            env = cpu.quiet_env(simdev.env(flash, "micropython"))
            cmd = simdev.command("micropython", "16M")
            interp = "MicroPython %s (PyPI)" % cpu._version(cmd[0])
        viper = subprocess.run(
            cmd[:1] + ["-c", "import micropython\n@micropython.viper\ndef f(): pass\nf()"],
            capture_output=True,
        ).returncode == 0  # fmt: skip
        for name, add in (
            ("Python, viper byte-add", "_add_viper"),
            ("Python, big-integer (SWAR) byte-add: the fallback", "_add_swar"),
            ("Python, plain byte loop", "_add_loop"),
        ):
            if add == "_add_viper" and not viper:
                lines.append(f"| {name} | {interp} | - (no viper emitter in this port) | - |")
                continue
            t, _ = _per_mb(cmd, env, work, add, len(old), len(new))
            lines.append(f"| {name} | {interp} | {t:,.0f} | - (a file) |")
        lines += [
            "",
            "The core alone, by old-image buffer (OTA_DELTA_OLD_BUF; tests/c harness, gcc -O2):",
            "",
            "| buffer | instructions per MB in ota_delta_run() | esp_partition_read() calls per "
            "MB | simulated flash per MB (apart) |",
            "|---|---|---|---|",
        ]
        for b in BUFS:
            t, idf, reads = _harness(work, len(old), b, work / f"c-{b}")
            lines.append(f"| {b} B | {t - idf:,.0f} | {reads:,} | {idf:,.0f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return lines


def main() -> int:
    old = images.app_image("v1.24.0", 1_048_576)
    new = pairs.variant(old, "frozen")
    for line in counts(old, new, delta.detools_patch(old, new)):
        print(line)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
