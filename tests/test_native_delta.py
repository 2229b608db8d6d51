"""The core's delta-patch applier in C (usermod/ota_native/ota_delta.c, tests/c/test_ota_delta.c)
over the host backend, on real detools patches made by host/mpota/delta.py for the pairs of
host/mpota/pairs.py; and its output against python/ota/delta.py's applier and detools'."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, build_c, c_test_names, image, run_c_test
from mpota import delta, pairs, simdev

BINARY = ROOT / "build" / "c" / "test_ota_delta"
OLD = image("v1.22.0", 300_016)
CP_EVERY = 4096


def write_fixtures(d: Path, old: bytes = OLD) -> dict[str, bytes]:
    """flash.bin running `old` from ota_0, and KIND.new / .patch / .cps for each pair."""
    simdev.create(d / "flash.bin", old)
    (d / "old.bin").write_bytes(old)
    news = {}
    for kind in pairs.KINDS:
        new = pairs.variant(old, kind)
        patch = delta.detools_patch(old, new)
        _, cps = delta.patch_checkpoints(patch, len(old), CP_EVERY)
        (d / f"{kind}.new").write_bytes(new)
        (d / f"{kind}.patch").write_bytes(patch)
        (d / f"{kind}.cps").write_text("".join("%d %d %d %d %d\n" % c for c in cps))
        news[kind] = new
    (d / "kinds").write_text("".join(k + "\n" for k in pairs.KINDS))
    return news


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory) -> Path:
    build_c()
    d = tmp_path_factory.mktemp("delta-fixtures")
    write_fixtures(d)
    return d


@pytest.mark.parametrize("name", c_test_names(BINARY))
def test_c(fixtures, name):
    run_c_test(BINARY, fixtures, name)


def test_c_applier_fails_on_a_wrong_image(fixtures, tmp_path):
    """The C tests compare with the expected image: one byte changed in it makes them fail."""
    for f in fixtures.iterdir():
        (tmp_path / f.name).write_bytes(f.read_bytes())
    new = bytearray((tmp_path / "code.new").read_bytes())
    new[len(new) // 2] ^= 1
    (tmp_path / "code.new").write_bytes(new)
    r = subprocess.run(
        [str(BINARY), str(tmp_path), "test_real_patches_any_piece_sizes"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 1 and "not ok test_real_patches_any_piece_sizes" in r.stdout


def test_c_and_python_appliers_agree(fixtures):
    """_ota.Patch (the C applier through the ctypes _ota of the cpython-native runtime) and
    python/ota/delta.py's Patch, on the same patches, from the start and from checkpoints,
    give detools' output; and the same error for the same damaged patch."""
    code = CMP.format(ota=str(ROOT / "python" / "ota"), d=str(fixtures), kinds=pairs.KINDS)
    r = simdev.run(fixtures / "flash.bin", code, "cpython-native", cwd=fixtures)
    print(r.stdout)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    for kind in pairs.KINDS:
        assert f"{kind} same" in lines, r.stdout
    errors = [ln for ln in lines if ln.startswith("error")]
    assert len(errors) >= 9 and all(ln.endswith(" same") for ln in errors), r.stdout
    assert detools_apply(fixtures, "code") == (fixtures / "code.new").read_bytes()


def detools_apply(d: Path, kind: str) -> bytes:
    return delta.apply((d / "old.bin").read_bytes(), (d / f"{kind}.patch").read_bytes())


CMP = """
import io, sys
sys.path.insert(0, {ota!r})
import delta as dev
import _ota
from esp32 import Partition

old = Partition.find(Partition.TYPE_APP, label="ota_0")[0]
olen = len(open({d!r} + "/old.bin", "rb").read())

def run(cls, part, patch, n, cp=None, size=3001):
    p = cls(io.BytesIO(patch), part, olen, n, cp)
    out = bytearray()
    buf = bytearray(size)
    try:
        while True:
            k = p.readinto(buf)
            if not k:
                break
            out += buf[:k]
    except ValueError as e:
        return "ValueError: %s" % e
    return bytes(out)

for kind in {kinds!r}:
    patch = open({d!r} + "/" + kind + ".patch", "rb").read()
    new = open({d!r} + "/" + kind + ".new", "rb").read()
    cps = [tuple(int(x) for x in ln.split()) for ln in open({d!r} + "/" + kind + ".cps")]
    ok = run(_ota.Patch, "ota_0", patch, len(new)) == new == run(dev.Patch, old, patch, len(new))
    for c in cps[::7]:
        cp = (0,) + c  # (comp, out, pay, frm, phase, left)
        a = run(_ota.Patch, "ota_0", patch[c[1]:], len(new), cp, 1000)
        b = run(dev.Patch, old, patch[c[1]:], len(new), cp)
        ok = ok and a == b == new[c[0]:]
    print(kind, "same" if ok else "differ")

patch = open({d!r} + "/code.patch", "rb").read()
new = open({d!r} + "/code.new", "rb").read()
def enc(v):  # a detools size
    a = -v if v < 0 else v
    b = [(a & 0x3F) | (0x40 if v < 0 else 0)]
    a >>= 6
    while a:
        b[-1] |= 0x80
        b.append(a & 0x7F)
        a >>= 7
    return bytes(b)

head = b"\\0" + enc(len(new)) + b"\\0"
bad = [
    ("outside", head + enc(0) + enc(1) + b"x" + enc(-1) + enc(1) + b"y", len(new)),
    ("past", head + enc(len(new) + 1), len(new)),
    ("format", b"\\0" + enc(len(new)) + enc(3), len(new)),
    ("truncated", patch[: len(patch) // 2], len(new)),
    ("trailing", patch + b"\\0", len(new)),
    ("length", patch, len(new) + 1),
    ("kind", b"\\1" + patch[1:], len(new)),
    ("size", patch[:1] + b"\\xff" * 9, len(new)),
    ("garbage", patch[:8] + bytes(range(256)) * 8, len(new)),
]
for what, p, n in bad:
    a, b = run(_ota.Patch, "ota_0", p, n), run(dev.Patch, old, p, n)
    print("error", what, repr(a)[:80], "same" if a == b and str(a).startswith("Val") else "differ")
"""


@pytest.mark.skipif(not shutil.which("valgrind"), reason="valgrind is not installed")
def test_applier_instruction_counts(capsys):
    """bench/applier.py (bench/delta.py's speed()) on a small pair: every applier counted, in
    the order their byte-adds imply, and the old-image reads per MB follow the buffer size."""
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        import applier
    finally:
        sys.path.pop(0)
    old = image("v1.22.0", 131_088)
    new = pairs.variant(old, "frozen")
    lines = applier.counts(old, new, delta.detools_patch(old, new))
    print("\n".join(lines))

    def per_mb(prefix):
        row = next(ln for ln in lines if ln.startswith("| " + prefix))
        return int(row.split(" | ")[2].replace(",", ""))

    c = per_mb("C, ")
    viper, swar, loop = (per_mb("Python, " + k) for k in ("viper", "big-integer", "plain"))
    assert 0 < c < viper < swar < loop
    reads = {}
    for b in applier.BUFS:
        row = next(ln for ln in lines if ln.startswith(f"| {b} B |")).split(" | ")
        assert int(row[1].replace(",", "")) > 0
        reads[b] = int(row[2].replace(",", ""))
    # a window read once as the patch walks forward: reads per MB = MB / buffer, near enough
    for b in applier.BUFS:
        assert abs(reads[b] - (1 << 20) // b) <= 2, reads
