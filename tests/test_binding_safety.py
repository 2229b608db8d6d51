"""The `_ota` binding (usermod/ota_native/modota.c) stays memory-safe whatever Python code does
(issue 15, item 7): streams that resize or keep the buffers they are given, checkpoints out of
range, impossible counts, use after close() or finish(). Each case must end in a Python
exception or a checked result, never a crash.

The cases run as device code under:
- micropython-native: the real binding, in the unix port named by $OTA_MICROPYTHON (skipped
  without one). Built with AddressSanitizer and UBSan (README, "Tests"), a sanitizer report
  fails the test;
- cpython-native: the ctypes twin of `_ota` (sim/espsim/modules/cpnative/_ota.py) over
  build/c/libota_host.so, which must give the same exceptions and messages;
- cpython-native-asan: the same twin over a libota_host.so built with AddressSanitizer and UBSan
  (loaded with LD_PRELOAD of libasan), where the core's own copies are checked too."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import ROOT, build_c, image
from mpota import delta, pairs, simdev

OLD = image("v1.22.0", 150_032)
NEW = pairs.variant(OLD, "code")
PATCH = delta.detools_patch(OLD, NEW)
SMALL = image("v1.23.1", 150_032)
SAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=0:abort_on_error=0",
    "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1",
}
SAN_MARKS = ("AddressSanitizer", "UndefinedBehaviorSanitizer", "runtime error:", "LeakSanitizer")

CASES = """
import gc, hashlib, _ota
patch = open("p.patch", "rb").read()
new = open("new.bin", "rb").read()
small = open("small.bin", "rb").read()
OLD_LEN, NEW_LEN = {old_len}, {new_len}


class Src:
    # Patch bytes (or an image) from memory through a Python readinto(); hook(self, b) may act
    # first and return a result of its own (not Ellipsis).
    def __init__(self, data, hook=None):
        self.data, self.pos, self.hook, self.calls, self.kept = data, 0, hook, 0, []
    def readinto(self, b):
        self.calls += 1
        if self.hook:
            r = self.hook(self, b)
            if r is not ...:
                return r
        n = min(len(b), len(self.data) - self.pos)
        b[:n] = self.data[self.pos:self.pos + n]
        self.pos += n
        return n


def attempt(name, fn):
    try:
        print(name, "->", fn())
    except Exception as e:
        print(name, "!", type(e).__name__, e.args[0] if e.args else "")


def apply(p, size=3000):
    out = bytearray()
    buf = bytearray(size)
    while True:
        n = p.readinto(buf)
        if not n:
            return bytes(out)
        out += buf[:n]


def patcher(hook=None, cp=None, data=patch):
    return _ota.Patch(Src(data, hook), "ota_0", OLD_LEN, NEW_LEN, cp)


# Heap objects with known contents, to see that writes through kept views land nowhere else.
def witnesses():
    return [bytearray(bytes([i % 251]) * 512) for i in range(64)]


def intact(ws):
    return all(w == bytes([i % 251]) * 512 for i, w in enumerate(ws))


# 1. The buffer given to Patch.readinto() grows while the patch source is read.
out = bytearray(3000)
def grow(s, b):
    if s.calls == 2:
        out.extend(bytes(100000))
    return ...
p = patcher(grow)
attempt("patch-out-grows", lambda: p.readinto(out))
attempt("patch-after-error", lambda: p.readinto(bytearray(10)))

# 2. The patch source keeps the views it is given; the Patch is collected; the views are
# written later.
def keep(s, b):
    s.kept.append(b)
    return ...
def kept_views():
    global p
    ok = apply(p) == new
    views = p_src.kept
    p = None
    gc.collect()
    ws = witnesses()
    for v in views:
        v[:] = b"U" * len(v)
    gc.collect()
    return ok, len(views[0]), intact(ws), bytes(views[-1][:2])
p_src = Src(patch, keep)
p = _ota.Patch(p_src, "ota_0", OLD_LEN, NEW_LEN)
attempt("patch-src-keeps-views", kept_views)
p_src = None

# 3. write_from(): the stream grows the buffer it is given.
u = _ota.Update()
def extend(s, b):
    b.extend(b"x" * 10)
    return ...
attempt("write-from-extend", lambda: u.write_from(Src(small, extend)))
attempt("write-after-failed-write-from", lambda: u.write(b"x"))

# 4. write_from(): the stream keeps the buffers it is given, which are written back.
def write_back():
    s = Src(small, keep)
    u = _ota.Update()
    n = u.write_from(s, 3 * 4096)
    last = s.kept[-1]
    m = u.write(memoryview(last)[1:])
    same = u.sha() == hashlib.sha256(small[:3 * 4096] + small[2 * 4096 + 1:3 * 4096]).digest()
    print("write-from-keep", n, m, len(last), same)
    u.finish(length=len(small))
attempt("write-from-keep-write-back", write_back)

# 5. ... and kept after the Update is gone.
def kept_after_gc():
    s = Src(small, keep)
    u = _ota.Update()
    u.write_from(s, 2 * 4096)
    u.abort()
    u = None
    gc.collect()
    ws = witnesses()
    for v in s.kept:
        v[:] = b"U" * len(v)
    return len(s.kept), len(s.kept[0]), intact(ws)
attempt("write-from-kept-after-gc", kept_after_gc)

# 6. A stream that aborts the update from its readinto().
u = _ota.Update()
def abort(s, b):
    if s.calls == 2:
        u.abort()
    return ...
attempt("write-from-reentrant-abort", lambda: u.write_from(Src(small, abort)))

# 7. Checkpoints out of range, of the wrong shape or type, or refused by the core.
for name, cp in (
    ("frm-2**63-1", (0, 0, 0, 2**63 - 1, 1, 1)),
    ("phase-2**32+1", (0, 0, 0, 0, 2**32 + 1, 1)),
    ("comp-str", ("x", 0, 0, 0, 1, 1)),
    ("pay-float", (0, 0, 1.5, 0, 1, 1)),
    ("frm-bool", (0, 0, 0, True, 1, 1)),
    ("left-negative", (0, 0, 0, 0, 1, -1)),
    ("out-2**30", (0, 2**30, 0, 0, 2, 1)),
    ("seven-items", (0, 0, 0, 0, 1, 1, 0)),
    ("five-items", [0, 0, 0, 0, 1]),
    ("not-a-sequence", 5),
    ("empty", ()),
    ("phase-3", (0, 0, 0, 0, 3, 1)),
    ("out-past-image", (0, NEW_LEN + 1, 0, 0, 2, 0)),
    ("frm-outside", (0, 0, 0, OLD_LEN, 1, 5)),
):
    attempt("cp-" + name, lambda: patcher(cp=cp))

# 8. Counts a patch source cannot have read.
for answer in (2**32, 1025, -1, 1.5, "1", 2**70):
    attempt("patch-count-%r" % (answer,), lambda: apply(patcher(lambda s, b: answer)))

# 9. Lengths beyond any partition, a finished update.
attempt("update-length-2**62", lambda: _ota.Update(length=2**62))
u = _ota.Update()
u.write(small)
u.finish()
attempt("write-after-finish", lambda: u.write(b"x"))
attempt("finish-after-finish", lambda: u.finish())
attempt("write-from-after-finish", lambda: u.write_from(Src(small)))

# 10. close(), and a source that closes the Patch or fails.
p = patcher()
buf = bytearray(500)
attempt("patch-before-close", lambda: p.readinto(buf))
p.close()
attempt("patch-after-close", lambda: p.readinto(buf))
p = patcher(lambda s, b: p.close() if s.calls == 3 else ...)
attempt("patch-closed-by-src", lambda: apply(p))
def fail(s, b):
    if s.calls == 3:
        raise OSError(5, "link down")
    return ...
p = patcher(fail)
attempt("patch-src-fails", lambda: apply(p))
attempt("patch-after-src-failed", lambda: p.readinto(buf))

# 11. None from readinto(): no data yet, asked again, by Patch and write_from() alike.
none = lambda s, b: None if s.calls % 3 == 1 else ...
attempt("patch-none", lambda: apply(patcher(none)) == new)
def write_none():
    u = _ota.Update()
    n = u.write_from(Src(small, none))
    return n, u.sha() == hashlib.sha256(small).digest()
attempt("write-from-none", write_none)

# 12. The buffer given to Patch.readinto() is the view its source was given.
def alias():
    s = Src(patch, keep)
    p = _ota.Patch(s, "ota_0", OLD_LEN, NEW_LEN)
    p.readinto(bytearray(10))
    n = p.readinto(s.kept[-1])
    return n, len(s.kept[-1])
attempt("patch-into-src-view", alias)
print("done")
"""

EXPECTED = [
    "patch-out-grows ! ValueError Patch.readinto()'s buffer was resized while the patch was read.",
    "patch-after-error ! ValueError This Patch is closed.",
    "patch-src-keeps-views -> (True, 1024, True, b'UU')",
    "write-from-extend ! AttributeError 'memoryview' object has no attribute 'extend'",
    "write-after-failed-write-from ! ValueError This OTA update was aborted.",
    "write-from-keep 12288 4095 4096 True",
    f"write-from-keep-write-back ! ValueError Receive {12288 + 4095} bytes (expect {len(SMALL)}).",
    "write-from-kept-after-gc -> (2, 4096, True)",
    "write-from-reentrant-abort ! ValueError This OTA update was aborted.",
    "cp-frm-2**63-1 ! ValueError cp's frm (item 3) must be an int from 0 to 2**30 - 1",
    "cp-phase-2**32+1 ! ValueError cp's phase (item 4) must be an int from 0 to 2**30 - 1",
    "cp-comp-str ! ValueError cp's comp (item 0) must be an int from 0 to 2**30 - 1",
    "cp-pay-float ! ValueError cp's pay (item 2) must be an int from 0 to 2**30 - 1",
    "cp-frm-bool ! ValueError cp's frm (item 3) must be an int from 0 to 2**30 - 1",
    "cp-left-negative ! ValueError cp's left (item 5) must be an int from 0 to 2**30 - 1",
    "cp-out-2**30 ! ValueError cp's out (item 1) must be an int from 0 to 2**30 - 1",
    "cp-seven-items ! ValueError cp must be (comp, out, pay, frm, phase, left)",
    "cp-five-items ! ValueError cp must be (comp, out, pay, frm, phase, left)",
    "cp-not-a-sequence ! ValueError cp must be (comp, out, pay, frm, phase, left)",
    "cp-empty ! ValueError cp must be (comp, out, pay, frm, phase, left)",
    "cp-phase-3 ! ValueError The transfer's checkpoint is not in a diff or extra block.",
    "cp-out-past-image ! ValueError The patch's blocks run past the new image: corrupted patch.",
    "cp-frm-outside ! ValueError The patch reads outside the old image: corrupted patch.",
    "patch-count-4294967296 ! ValueError Stream error: readinto() returned a huge int for a "
    "buffer of 1024 bytes.",
    "patch-count-1025 ! ValueError Stream error: readinto() returned 1025 for a buffer of 1024 "
    "bytes.",
    "patch-count--1 ! ValueError Stream error: readinto() returned -1 for a buffer of 1024 bytes.",
    "patch-count-1.5 ! ValueError Stream error: readinto() returned a float for a buffer of 1024 "
    "bytes.",
    "patch-count-'1' ! ValueError Stream error: readinto() returned a str for a buffer of 1024 "
    "bytes.",
    "patch-count-1180591620717411303424 ! ValueError Stream error: readinto() returned a huge "
    "int for a buffer of 1024 bytes.",
    "update-length-2**62 ! ValueError length (4611686018427387904 bytes) is > size of partition.",
    "write-after-finish ! ValueError This OTA update is finished: start a new Update() to write "
    "again.",
    "finish-after-finish ! ValueError This OTA update is finished: start a new Update() to write "
    "again.",
    "write-from-after-finish ! ValueError This OTA update is finished: start a new Update() to "
    "write again.",
    "patch-before-close -> 500",
    "patch-after-close ! ValueError This Patch is closed.",
    "patch-closed-by-src ! ValueError This Patch is closed.",
    "patch-src-fails ! OSError 5",
    "patch-after-src-failed ! ValueError This Patch is closed.",
    "patch-none -> True",
    f"write-from-none -> ({len(SMALL)}, True)",
    "patch-into-src-view -> (1024, 1024)",
    "done",
]


def asan_lib() -> Path:
    """build/c-asan/libota_host.so: the core and host backend with ASan and UBSan."""
    build = ROOT / "build" / "c-asan"
    flags = "-O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover"
    r = subprocess.run(
        ["make", "-s", "-C", str(ROOT / "tests" / "c"), f"BUILD={build}", f"CFLAGS={flags}",
         f"{build}/libota_host.so"],
        capture_output=True, text=True,
    )  # fmt: skip
    if r.returncode != 0:
        pytest.fail(f"building the ASan libota_host.so failed:\n{r.stdout}{r.stderr}")
    return build / "libota_host.so"


def libasan() -> str | None:
    cc = shutil.which("gcc")
    if not cc:
        return None
    path = subprocess.run(
        [cc, "-print-file-name=libasan.so"], capture_output=True, text=True
    ).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


@pytest.fixture(params=["cpython-native", "cpython-native-asan", "micropython-native"])
def device(request, tmp_path):
    """(simulated device, runtime, extra environment) with the patch's files in its directory."""
    extra = {}
    runtime = request.param
    if runtime == "micropython-native":
        if not os.environ.get("OTA_MICROPYTHON"):
            pytest.skip(
                "micropython-native needs OTA_MICROPYTHON (a unix port built with "
                "usermod/ota_native, ideally with ASan and UBSan: see README, Tests)"
            )
        extra.update(SAN_ENV)
    elif runtime == "cpython-native-asan":
        runtime = "cpython-native"
        asan = libasan()
        if not asan:
            pytest.skip("no libasan for gcc (Debian: libasan8) to load the ASan libota_host.so")
        extra.update(SAN_ENV, LD_PRELOAD=asan, OTA_HOST_LIB=str(asan_lib()))
    else:
        build_c()
    flash = tmp_path / "flash.bin"
    simdev.create(flash, OLD)
    (tmp_path / "p.patch").write_bytes(PATCH)
    (tmp_path / "new.bin").write_bytes(NEW)
    (tmp_path / "small.bin").write_bytes(SMALL)
    return flash, runtime, extra


def run(device, code):
    flash, runtime, extra = device
    r = simdev.run(flash, code, runtime, cwd=flash.parent, environ=extra, timeout=300)
    out = r.stdout + r.stderr
    assert not any(m in out for m in SAN_MARKS), out
    assert r.returncode == 0, out
    return r.stdout.splitlines()


def test_every_case_raises_or_checks(device):
    lines = run(device, CASES.format(old_len=len(OLD), new_len=len(NEW)))
    assert lines == EXPECTED


def test_core_refuses_data_that_overlaps_its_buffer(device):
    """ota_core_write() with data inside the session's own buffer (what a view of it passed back
    to write() was): refused with ESP_ERR_INVALID_ARG, not copied onto itself (memcpy with
    overlapping arguments: ASan's memcpy-param-overlap in the ASan build)."""
    flash, runtime, extra = device
    if runtime != "cpython-native":
        pytest.skip("calls the core through ctypes: CPython runtimes only")
    lines = run(
        device,
        """
import ctypes, _ota
u = _ota.Update()
u.write(open("small.bin", "rb").read(100))
room = ctypes.c_size_t()
space = _ota._lib.ota_core_space(u._core, ctypes.byref(room))
other = ctypes.addressof(ctypes.create_string_buffer(100))
for at, n in ((space - 50, 60), (space + 1, 100), (space - 100, 100), (other, 8)):
    print(hex(_ota._lib.ota_core_write(u._core, at, n)), u.nbytes)
""",
    )
    # Free part, across its start, the bytes already held: refused; other memory: written.
    assert lines == ["0x102 100", "0x102 100", "0x102 100", "0x0 108"]


INFLATE = """
import sys
sys.path.insert(0, {ota!r})
from delta import Inflate
for name in ("corrupted.z", "garbage.z", "truncated.z", "good.z"):
    d = Inflate(open(name, "rb"), 10)
    buf = bytearray(1024)
    n = 0
    try:
        while True:
            k = d.readinto(buf)
            if not k:
                break
            n += k
        print(name, n)
    except ValueError as e:
        print(name, "ValueError", e)
"""


@pytest.mark.parametrize("runtime", ["micropython", "cpython", "micropython-native"])
def test_corrupted_compressed_stream_is_refused(runtime, tmp_path):
    """A compressed body is inflated before its SHA-256 can be checked (README): bad deflate data
    must end in the `ota` package's ValueError. (MicroPython's inflater has a bug of its own on
    some corrupted streams, lib/uzlib/tinflate.c, that UBSan reports; these do not reach it.)"""
    if runtime == "micropython-native" and not os.environ.get("OTA_MICROPYTHON"):
        pytest.skip("micropython-native needs OTA_MICROPYTHON (a unix port built with _ota)")
    import random
    import zlib

    rnd = random.Random(7)
    data = bytes(range(256)) * 40 + b"hello world " * 300
    c = zlib.compressobj(9, zlib.DEFLATED, -10)
    good = c.compress(data) + c.flush()
    bad = bytearray(good)
    for i in range(40, len(bad), 97):
        bad[i] ^= 0x5A
    for name, blob in (
        ("good.z", good),
        ("corrupted.z", bytes(bad)),
        ("garbage.z", bytes(rnd.randrange(256) for _ in range(20000))),
        ("truncated.z", good[: len(good) // 2]),
    ):
        (tmp_path / name).write_bytes(blob)
    flash = tmp_path / "flash.bin"
    simdev.create(flash, SMALL)
    code = INFLATE.format(ota=str(ROOT / "python" / "ota"))
    r = simdev.run(flash, code, runtime, cwd=tmp_path, environ=SAN_ENV)
    out = r.stdout + r.stderr
    assert r.returncode == 0 and not any(m in out for m in SAN_MARKS), out
    refused = "ValueError The transfer's compressed data is "
    lines = r.stdout.splitlines()
    # Damage can look like data that stops short, to an inflater: either refusal will do.
    assert len(lines) == 4, out
    for name, line in zip(("corrupted.z", "garbage.z"), lines[:2], strict=True):
        assert line in [f"{name} {refused}{w}." for w in ("corrupted", "truncated")], out
    assert lines[2:] == [
        f"truncated.z {refused}truncated.",
        f"good.z {len(data)}",
    ]
