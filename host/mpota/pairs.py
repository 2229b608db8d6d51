"""Pairs of related app images for delta-update tests and benchmarks: a firmware and a modeled
later build of it. The changes are models of what a rebuild does, applied to the bytes of a
real or realistic image (every segment keeps its length and load address; checksum and
appended SHA-256 are recomputed, so esptool and the bootloader accept the result):

- "version": the version string in the banner and the build time change (same length);
- "frozen": a frozen module gains a line: 96 bytes inserted in the flash rodata (DROM), the
  rodata after it shifts up to a point where as much shrank, and 1 word in 512 of rodata and
  code (the pointers into the shifted part; never text) moves by 96;
- "code": a release's worth of code changes: 40 places in the code (IROM) rewritten (3 % of
  it), 2 % inserted and as much deleted elsewhere, and 1 word in 64 of rodata and code moved.

Each variant has a new build id (app_elf_sha256). Segment 0 is DROM (rodata, starting with the
app description) and the largest segment mapped at the chip's IROM window is the code."""

from __future__ import annotations

import hashlib
import random
import struct

KINDS = ("version", "frozen", "code")


def segments(image: bytes) -> list[tuple[int, int, int]]:
    """(load address, file offset of the data, length) of each segment."""
    n = image[1]
    off = 24
    out = []
    for _ in range(n):
        addr, size = struct.unpack_from("<II", image, off)
        out.append((addr, off + 8, size))
        off += 8 + size
    return out


def finish(image: bytearray) -> bytes:
    """Recompute the XOR checksum (seed 0xEF) and, when hash_appended, the SHA-256."""
    digest = image[23] == 1
    segs = segments(image)
    end = segs[-1][1] + segs[-1][2]
    pos = (end + 1 + 15) // 16 * 16 - 1  # the checksum: last byte of the 16-byte padding
    c = 0xEF
    for _, off, size in segs:
        for b in image[off : off + size]:
            c ^= b
    image[pos] = c
    if digest:
        image[pos + 1 : pos + 33] = hashlib.sha256(image[: pos + 1]).digest()
    return bytes(image)


def _code_segment(segs):
    # The largest segment after segment 0 whose address is in a flash-mapped window (0x42.. on
    # RISC-V chips, 0x400d.. on the ESP32); failing that, the largest one.
    flash = [s for s in segs[1:] if s[0] >> 24 == 0x42 or 0x400C0000 <= s[0] < 0x40400000]
    return max(flash or segs[1:], key=lambda s: s[2])


def _shift_words(img, rng, segs, every, delta):
    for _, off, size in segs:
        for w in range(off + rng.randrange(every) * 4, off + size - 3, every * 4):
            if all(32 <= c < 127 or c in (0, 10, 13) for c in img[w : w + 4]):
                continue  # text (a string constant), not a pointer
            v = struct.unpack_from("<I", img, w)[0]
            struct.pack_into("<I", img, w, (v + delta) & 0xFFFFFFFF)


def _move(img, rng, off, size, n):
    """Insert n new bytes at one place of [off, off+size) and delete n bytes at a later one."""
    a = off + rng.randrange(size // 10, size // 2)
    b = a + rng.randrange(size // 8, size // 3)
    data = bytes(img[off : off + size])
    ra, rb = a - off, b - off
    new = data[:ra] + rng.randbytes(n) + data[ra : rb - n] + data[rb:]
    img[off : off + size] = new[:size]


def variant(image: bytes, kind: str, seed: int = 1) -> bytes:
    """A modeled later build of `image` (see the module's docstring)."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}")
    rng = random.Random(f"{kind} {seed} {hashlib.sha256(image).hexdigest()}")
    img = bytearray(image)
    segs = segments(img)
    drom = segs[0]
    desc = drom[1]
    img[desc + 144 : desc + 176] = rng.randbytes(32)  # app_elf_sha256
    img[desc + 80 : desc + 88] = b"%02d:%02d:%02d" % (
        rng.randrange(24),
        rng.randrange(60),
        rng.randrange(60),
    )
    if kind == "version":
        i = img.find(b"MicroPython v")
        if i < 0:
            raise ValueError("no MicroPython banner in the image")
        while i >= 0:
            j = img.index(b" ", i + 12)
            v = img[i + 12 : j]
            last = v[-1:]
            v[-1:] = b"1" if last != b"1" else b"2"
            img[i + 12 : j] = v
            i = img.find(b"MicroPython v", j)
    elif kind == "frozen":
        _move(img, rng, drom[1] + 256, drom[2] - 256, 96)
        _shift_words(img, rng, [drom, _code_segment(segs)], 512, 96)
    else:
        code = _code_segment(segs)
        _, off, size = code
        for _ in range(40):
            n = int(size * 0.03 / 40) // 4 * 4
            at = off + rng.randrange(size - n) // 4 * 4
            img[at : at + n] = rng.randbytes(n)
        for _ in range(10):
            _move(img, rng, off, size, int(size * 0.02 / 10) // 4 * 4)
        _shift_words(img, rng, [drom, code], 64, 0x40)
    return finish(img)
