"""CPU cost of an OTA update, in instructions per MB written, counted by valgrind's callgrind
(repeatable, unlike times on a shared machine), with the flash emulation's cost kept apart.

- native: the C core over the host backend (bench/cpu_native.c). Inclusive costs of the update
  function and of the emulated chip's operations (host_flash_read/_program, flash_erase, never
  inlined) give "core + ESP-IDF logic" = update - emulation; SHA-256 is shown on its own, since
  an ESP32 runs it on its SHA hardware.
- pure: the ota package under the MicroPython unix port, over the simulator. The same update is
  run (A); its flash calls are replayed from a trace with (B) and without (D) making them, so
  that B - D is the simulator's work; with the imports alone (C), the package's own cost is
  A - (B - D) - C. Heap allocations per chunk come from micropython.mem_total() over the write
  phase, minus what the simulator allocates inside the flash calls.

  python bench/cpu.py [--size 1525536]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "host"), str(ROOT / "sim")]

from mpota import images, simdev  # noqa: E402

NATIVE = ROOT / "usermod" / "ota_native"
MB = 1 << 20

FULL = """
import micropython, gc
from ota.writer import OTA
f = open({image!r}, "rb")
gc.collect()
m0 = micropython.mem_total()
ota = OTA(verbose=False, length={length})
ota.write_file(f)
m1 = micropython.mem_total()
ota.close()
print("alloc", m1 - m0)
"""

REPLAY = """
import micropython, gc
from esp32 import Partition
from ota.writer import OTA
DRY = {dry}  # parse and read as the replay does, without the flash calls
f = open({image!r}, "rb")
ops = open({trace!r})
parts = {{}}
buf = bytearray({chunk})
mv = memoryview(buf)
gc.collect()
m0 = micropython.mem_total()
for line in ops:
    op = line.split()
    if op[0] == "set_boot":
        m1 = micropython.mem_total()
        if not DRY:
            Partition(op[1]).set_boot()
        continue
    p = parts.get((op[1], op[2]))
    if p is None:
        p = parts[(op[1], op[2])] = Partition(op[1], int(op[2]))
    if op[0] == "ioctl":
        if not DRY:
            p.ioctl(int(op[3]), int(op[4]))
        continue
    n = int(op[4])
    if op[0] == "writeblocks":
        f.readinto(mv[:n])
        if DRY:
            pass
        elif op[5] == "None":
            p.writeblocks(int(op[3]), mv[:n])
        else:
            p.writeblocks(int(op[3]), mv[:n], int(op[5]))
    elif not DRY:
        p.readblocks(int(op[3]), mv[:n], int(op[5]))
"""

HASH = """
import hashlib
from esp32 import Partition
from ota.writer import OTA
f = open({image!r}, "rb")
buf = bytearray({chunk})
mv = memoryview(buf)
for _ in range(2):  # the received bytes, and the read-back
    h = hashlib.sha256()
    f.seek(0)
    while True:
        n = f.readinto(buf)
        if not n:
            break
        h.update(mv[:n])
    h.digest()
"""

# The package's own heap allocations: the total over the write phase, minus what the simulator
# allocates inside the Partition calls (measured around each call; the measuring allocates
# nothing: small ints, and no bound-method objects for direct calls).
ALLOC = """
import micropython, gc
from esp32 import Partition
from ota.writer import OTA
sim = [0]
orig_w, orig_r, orig_i = Partition.writeblocks, Partition.readblocks, Partition.ioctl
def writeblocks(self, block, buf, off=None):
    m = micropython.mem_total()
    orig_w(self, block, buf, off)
    sim[0] += micropython.mem_total() - m
def readblocks(self, block, buf, off=0):
    m = micropython.mem_total()
    orig_r(self, block, buf, off)
    sim[0] += micropython.mem_total() - m
def ioctl(self, op, arg):
    m = micropython.mem_total()
    r = orig_i(self, op, arg)
    sim[0] += micropython.mem_total() - m
    return r
Partition.writeblocks, Partition.readblocks, Partition.ioctl = writeblocks, readblocks, ioctl
f = open({image!r}, "rb")
ota = OTA(verbose=False, length={length})
gc.collect()
m0 = micropython.mem_total()
ota.write_file(f)
m1 = micropython.mem_total()
print("alloc", m1 - m0 - sim[0])
"""

IMPORTS = """
import micropython, gc
from esp32 import Partition
from ota.writer import OTA
f = open({image!r}, "rb")
"""


def callgrind(cmd: list[str], out: Path, env=None, cwd=None) -> Path:
    r = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", *cmd],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed under valgrind:\n{r.stdout}{r.stderr}")
    return out


def total(out: Path) -> int:
    m = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.M)
    return int(m.group(1))


def inclusive(out: Path) -> dict[str, int]:
    r = subprocess.run(
        ["callgrind_annotate", "--inclusive=yes", "--threshold=100", str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    costs: dict[str, int] = {}
    for line in r.stdout.splitlines():
        m = re.match(r"\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+\S*:(\S+?)(?:\s|$)", line)
        if m:
            name = m.group(2).split("'")[0]
            costs[name] = max(costs.get(name, 0), int(m.group(1).replace(",", "")))
    return costs


def native(work: Path, length: int) -> dict:
    exe = work / "cpu_native"
    srcs = [
        NATIVE / "ota_core.c",
        NATIVE / "ota_sha256.c",
        NATIVE / "ota_sig.c",
        *(
            NATIVE / "host" / f
            for f in (
                "ota_host.c",
                "soc_host.c",
                "flash_host.c",
                "esp_partition_host.c",
                "esp_image_format_host.c",
                "app_update_host.c",
            )
        ),
        ROOT / "bench" / "cpu_native.c",
    ]
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-g",
            "-std=c11",
            "-D_DEFAULT_SOURCE",
            f"-I{NATIVE}",
            f"-I{NATIVE}/host/include",
            f"-I{NATIVE}/host",
            "-o",
            str(exe),
            *map(str, srcs),
            "-lmbedcrypto",
        ],
        check=True,
    )
    flash, img = _device(work, length)
    out = callgrind([str(exe), str(flash), str(img)], work / "native.out")
    c = inclusive(out)
    update = c["run_update"]
    idf_verify = c["ota_host_verify_image"]  # ESP-IDF's esp_image_verify, with its reads
    emulation = sum(c.get(f, 0) for f in ("host_flash_read", "host_flash_program", "flash_erase"))
    emulation -= c.get("image_read", 0)  # the reads inside idf_verify
    sha = sum(v for k, v in c.items() if re.fullmatch(r"mbedtls_sha256_update(_ret)?", k))
    sha -= c.get("image_sha", 0)
    core = update - idf_verify - emulation
    return {
        "update": update,
        "emulation": emulation,
        "idf_verify": idf_verify,
        "sha": sha,
        "core": core,
        "core_no_sha": core - sha,
    }


def pure(work: Path, length: int, heap: str) -> dict:
    flash, img = _device(work, length)
    snapshot = flash.read_bytes()
    state = Path(str(flash) + ".state").read_text()
    env = simdev.env(flash, "micropython")
    # As `mpota sim run --heap` starts the device: simboot loads the simulated chip first and
    # keeps its heap apart (espsim/modules/simboot.py).
    mp = simdev.command("micropython", heap)
    trace = work / "trace.txt"

    def run(code: str, name: str, record: bool = False) -> tuple[int, int]:
        flash.write_bytes(snapshot)
        Path(str(flash) + ".state").write_text(state)
        script = work / f"{name}.py"
        script.write_text("import simboot\n" + code)
        e = dict(env, ESPSIM_TRACE=str(trace)) if record else env
        out = callgrind(mp + [str(script)], work / f"{name}.out", e, cwd=work)
        printed = subprocess.run(
            mp + [str(script)], env=env, capture_output=True, text=True, cwd=work
        )
        alloc = re.search(r"alloc (\d+)", printed.stdout)
        return total(out), int(alloc.group(1)) if alloc else 0

    full_code = FULL.format(image=str(img), length=length)
    flash.write_bytes(snapshot)
    subprocess.run(
        mp + ["-c", "import simboot\n" + full_code],
        env=dict(env, ESPSIM_TRACE=str(trace)),
        check=True,
        cwd=work,
    )
    chunk = max(
        int(line.split()[4])
        for line in trace.read_text().splitlines()
        if line.startswith("writeblocks")
    )
    a, _ = run(full_code, "full")
    b, _ = run(REPLAY.format(image=str(img), trace=str(trace), chunk=chunk, dry=False), "replay")
    dry, _ = run(REPLAY.format(image=str(img), trace=str(trace), chunk=chunk, dry=True), "dry")
    c, _ = run(IMPORTS.format(image=str(img)), "imports")
    h, _ = run(HASH.format(image=str(img), chunk=chunk), "hash")
    _, alloc = run(ALLOC.format(image=str(img), length=length), "alloc")
    chunks = -(-length // chunk)
    simulator = b - dry
    package = a - simulator - c
    return {
        "chunk": chunk,
        "package": package,
        "simulator": simulator,
        "sha": h - c,
        "package_no_sha": package - (h - c),
        "alloc_per_chunk": alloc / chunks,
    }


def _device(work: Path, length: int) -> tuple[Path, Path]:
    flash = work / "flash.bin"
    simdev.create(flash, images.app_image("v1.22.0", size=600_032))
    img = work / "image.bin"
    img.write_bytes(images.app_image("v1.23.0", size=length))
    return flash, img


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", type=int, default=images.SEED_IMAGE_SIZE)
    a = p.parse_args(argv)
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is needed (Debian/Ubuntu: apt-get install valgrind)")
    mb = a.size / MB
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        n = native(work, a.size)
        p4 = pure(work, a.size, "80K")  # no room for a 64 KB buffer: 4 KB
        p64 = pure(work, a.size, "192K")
    print(f"Instructions per MB written ({a.size:,}-byte image, valgrind callgrind)")
    rows = [
        (
            "native core (C)",
            n["core"],
            n["core_no_sha"],
            "the update minus ESP-IDF's image checks and the flash emulation",
        ),
        (
            "pure, 4 KB buffer (MicroPython)",
            p4["package"],
            p4["package_no_sha"],
            "the update minus the simulator's work in its flash calls, and imports",
        ),
        (
            "pure, 64 KB buffer (MicroPython)",
            p64["package"],
            p64["package_no_sha"],
            "the update minus the simulator's work in its flash calls, and imports",
        ),
    ]
    print("| path | all | without SHA-256 | measured as |")
    print("|---|---|---|---|")
    for name, all_, no_sha, how in rows:
        print(f"| {name} | {all_ / mb:,.0f} | {no_sha / mb:,.0f} | {how} |")
    print()
    print("Kept apart (not the code under test):")
    print(
        f"- native: ESP-IDF's image verification (host backend) {n['idf_verify'] / mb:,.0f} "
        f"per MB, flash emulation {n['emulation'] / mb:,.0f} per MB"
    )
    print(
        f"- pure: the simulator (flash calls, set_boot's verification) "
        f"{p64['simulator'] / mb:,.0f} per MB (64 KB buffer), {p4['simulator'] / mb:,.0f} "
        "(4 KB)"
    )
    print(
        f"- SHA-256 (both paths hash the received bytes and the read-back; on an ESP32 the SHA "
        f"hardware does it): native {n['sha'] / mb:,.0f}, MicroPython hashlib "
        f"{p64['sha'] / mb:,.0f} per MB"
    )
    print(
        f"Ratio, without SHA-256: pure 64 KB / native = "
        f"{p64['package_no_sha'] / n['core_no_sha']:.1f}, pure 4 KB / native = "
        f"{p4['package_no_sha'] / n['core_no_sha']:.1f}"
    )
    print()
    for name, r in (("4 KB", p4), ("64 KB", p64)):
        print(
            f"pure path, {name} buffer: {r['alloc_per_chunk']:.0f} bytes allocated on the "
            f"MicroPython heap per {r['chunk']}-byte chunk (micropython.mem_total)"
        )
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
