"""Power cuts over the whole network path: the simulated ESP32 runs `ota.update.from_json()`
against mpota's HTTP server on 127.0.0.1, and the power fails at a flash operation of that call
(the interrupted erase or page program is left half done). Then, with no manual step, the chip
is powered on (the bootloader picks a slot) and the same from_json() is called again, in the
same working directory (where its resume state lives), until it reports success. Each cut point
must end on the new firmware, intact, and the device must never fail to boot.

Cases: the image served plain, zlib-compressed, and resumed (a first call ends on a dropped
connection, leaving its resume state; the cuts fall in the call that resumes); each with an
image whose length is a multiple of 64 KiB and one whose length is not. Runtimes: MicroPython
(pure backend) and CPython with the native backend (the C core through ctypes).

Used by bench/powercut.py (`make powercut`)."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for _p in (ROOT / "tests", ROOT / "sim", ROOT / "host"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import netserver  # noqa: E402  (tests/netserver.py: mpota's server, faults injectable)
from espsim import bootloader, device  # noqa: E402
from mpota import images, manifest, simdev  # noqa: E402

RUNTIMES = ("micropython", "cpython-native")
SIZES = (196_608, 229_392)  # 3 x 64 KiB; 224 KiB + 16 bytes
KINDS = ("plain", "zlib", "resumed")
MAX_CALLS = 5  # from_json() calls after a cut before the device counts as stuck
DROP_AFTER = 90_000  # the resumed case's first call loses its connection here

CALL = """
import ota.update
try:
    ota.update.from_json(%r, reboot=False, backoff=0, verbose=False%s)
    print("RESULT ok")
except Exception as e:
    print("RESULT", type(e).__name__, e)
"""

# Appended to CALL to count the flash operations of the call (erases and page programs, on the
# simulator's flash and on the native backend's).
COUNT = """
from espsim import device
c = device.current().flash.counts
n = c["erase_4k"] + c["erase_64k"] + c["program_pages"]
try:
    import _ota
    h = _ota._lib.ota_host_counts().contents
    n += h[0] + h[1] + h[2]
except ImportError:
    pass
print("OPS", n)
"""


def _result(r) -> str | None:
    lines = [x for x in r.stdout.splitlines() if x.startswith("RESULT ")]
    return lines[-1][len("RESULT ") :] if lines else None


class Board:
    """A simulated ESP32 (flash file + simulator state) and its filesystem (a directory: the
    device's working directory), with snapshots."""

    def __init__(self, work: Path, runtime: str):
        self.runtime = runtime
        self.flash = work / "flash.bin"
        self.fs = work / "fs"
        self.fs.mkdir()
        simdev.create(self.flash, images.app_image("v1.22.0", size=600_032))
        # The target slot holds an older firmware, as on a device updated before: a cut erase
        # or program leaves its bytes mixed with the new image's, not an erased slot.
        dev = device.Device(str(self.flash))
        try:
            target = dev.find_first(0, 0xFF, "ota_1").address
        finally:
            dev.close()
        with open(self.flash, "r+b") as f:
            f.seek(target)
            f.write(images.app_image("v1.21.0", size=600_032))

    def save(self) -> dict:
        files = {p: p.read_bytes() for p in self.fs.iterdir()}
        return {
            "flash": self.flash.read_bytes(),
            "state": Path(str(self.flash) + ".state").read_text(),
            "files": files,
        }

    def restore(self, snap: dict) -> None:
        self.flash.write_bytes(snap["flash"])
        Path(str(self.flash) + ".state").write_text(snap["state"])
        shutil.rmtree(self.fs)
        self.fs.mkdir()
        for p, data in snap["files"].items():
            p.write_bytes(data)

    def call(self, url: str, cut: int | None = None, extra: str = "", count: bool = False):
        code = CALL % (url, extra) + (COUNT if count else "")
        return simdev.run(self.flash, code, self.runtime, cut_after=cut, cwd=self.fs)

    def power_on(self) -> str:
        """Power on: the bootloader's choice (raises bootloader.Bricked)."""
        dev = device.Device(str(self.flash))
        try:
            part, _ = bootloader.boot(dev)
            return part.label
        finally:
            dev.close()

    def slot(self, label: str) -> bytes:
        dev = device.Device(str(self.flash))
        try:
            p = dev.find_first(0, 0xFF, label)
            return self.flash.read_bytes()[p.address : p.address + p.size]
        finally:
            dev.close()


def site(work: Path):
    """The images and their manifests, served by mpota's server on 127.0.0.1."""
    www = work / "www"
    www.mkdir()
    server = netserver.start(www)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    urls, data = {}, {}
    for size in SIZES:
        name = f"fw-{size}.bin"
        data[size] = images.app_image("v1.23.0", size=size)
        (www / name).write_bytes(data[size])
        for kind in KINDS:
            m = manifest.make(www / name, compression="zlib" if kind == "zlib" else None)
            (www / f"{kind}-{size}.json").write_text(json.dumps(m))
            urls[kind, size] = f"{base}/{kind}-{size}.json"
    return server, urls, data


def cut_points(total: int, stride: int) -> list[int]:
    """Every stride-th operation, and always the first two and the last six (the image's last
    pages and the otadata erase and program that switch the boot slot); stride 0: a sample of
    four (the first, the middle, and the otadata erase and program)."""
    if stride == 0:
        return sorted({0, total // 2, total - 2, total - 1})
    pts = set(range(0, total, stride)) | {0, 1} | set(range(max(0, total - 6), total))
    return sorted(p for p in pts if 0 <= p < total)


def campaign(
    work: Path, runtime: str, kind: str, size: int, url: str, image: bytes, stride: int, server
) -> dict:
    board = Board(work, runtime)
    if kind == "resumed":
        # The first call loses its connection (no retry): it leaves its resume state.
        server.faults.update(drop_times=1, drop_after=DROP_AFTER)
        r = board.call(url, extra=", retries=0")
        server.faults.clear()
        if (_result(r) or "").startswith("ok") or not (board.fs / "ota_resume.json").exists():
            raise SystemExit(
                f"{runtime} {kind} {size}: the first call left no resume state:\n"
                f"{r.stdout}{r.stderr}"
            )
    start = board.save()
    r = board.call(url, count=True)
    if _result(r) != "ok":
        raise SystemExit(
            f"{runtime} {kind} {size}: the update fails without a cut:\n{r.stdout}{r.stderr}"
        )
    total = int(r.stdout.split("OPS ")[1].split()[0])
    out = {
        "runtime": runtime,
        "kind": kind,
        "size": size,
        "ops": total,
        "tried": 0,
        "bricked": 0,
        "stuck": 0,
        "wrong_boot": 0,
        "failed": 0,  # cut points with any of the above, or an error without a cut
        "uncut": 0,  # cut points the update completed before (see point())
        "calls": [],
        "notes": [],
    }
    for cut in cut_points(total, stride):
        board.restore(start)
        out["tried"] += 1
        problem = point(board, url, image, cut, out)
        if problem:
            out["failed"] += 1
            out["notes"].append(f"cut after {cut} operations: {problem}")
    shutil.rmtree(board.fs)
    return out


def point(board: Board, url: str, image: bytes, cut: int, out: dict) -> str:
    """One cut point: the call with the power failing after `cut` flash operations, power-on,
    then the same call until it succeeds. Returns what went wrong ("" when nothing did)."""
    r = board.call(url, cut=cut)
    result = _result(r)
    if result == "ok":
        # The call needed fewer operations than the counted run (the native backend programs a
        # page once per write that touches it, and writes follow the socket's chunks): the
        # update completed before the cut.
        out["uncut"] += 1
    elif result is not None or "PowerCut" not in r.stdout + r.stderr:
        return f"failed without a power cut: {result or (r.stdout + r.stderr)[-300:]}"
    else:
        try:
            after_cut = board.power_on()
        except bootloader.Bricked as e:
            out["bricked"] += 1
            return f"bricked: {e}"
        if after_cut != "ota_0":  # the switch to ota_1 cannot have completed
            out["wrong_boot"] += 1
            return f"boots {after_cut} after the cut"
        calls = 0
        while result != "ok" and calls < MAX_CALLS:
            calls += 1
            result = _result(board.call(url))
        if result != "ok":
            out["stuck"] += 1
            return f"stuck: {calls} calls failed, the last with {result}"
        out["calls"].append(calls)
    try:
        booted = board.power_on()
    except bootloader.Bricked as e:
        out["bricked"] += 1
        return f"bricked after the update: {e}"
    if booted != "ota_1" or board.slot("ota_1")[: len(image)] != image:
        out["wrong_boot"] += 1
        return f"ends on {booted}, not on the new firmware"
    if (board.fs / "ota_resume.json").exists():
        return "the resume state outlived the update"
    return ""


def run(work: Path, stride: int, runtimes=RUNTIMES, kinds=KINDS, sizes=SIZES) -> list[dict]:
    server, urls, data = site(work)
    rows = []
    try:
        for runtime in runtimes:
            for kind in kinds:
                for size in sizes:
                    d = work / f"{runtime}-{kind}-{size}"
                    d.mkdir()
                    rows.append(
                        campaign(
                            d, runtime, kind, size, urls[kind, size], data[size], stride, server
                        )
                    )
    finally:
        server.shutdown()
        server.server_close()
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| runtime (backend) | download | image bytes | flash ops | cut points tried | bricked "
        "| stuck | wrong boot | calls to success: max / mean | completed before the cut |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        backend = "native" if r["runtime"].endswith("-native") else "pure"
        calls = r["calls"]
        mean = sum(calls) / len(calls) if calls else 0
        lines.append(
            f"| {r['runtime']} ({backend}) | {r['kind']} | {r['size']:,} | {r['ops']} | "
            f"{r['tried']} | {r['bricked']} | {r['stuck']} | {r['wrong_boot']} | "
            f"{max(calls, default=0)} / {mean:.2f} | {r['uncut']} |"
        )
    return "\n".join(lines)
