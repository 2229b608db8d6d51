"""Delta updates on the PC: detools sequential bsdiff patches (no inner compression) and the
resumable transport both patches and compressed full images travel in ("MPZ1").

MPZ1 file = header + raw deflate stream (zlib, wbits from the header). The deflate stream is
written with a full flush (Z_FULL_FLUSH: byte-aligned, no reference to earlier data) at each
checkpoint, so a raw inflater started at a checkpoint's compressed offset decodes from there.

Header, little-endian:
  0  4  magic b"MPZ1"
  4  1  format version (1)
  5  1  kind: 0 = the image itself, 1 = a detools sequential patch (compression "none")
  6  1  wbits: log2 of the deflate window (9..15)
  7  1  0
  8  4  payload length (the image, or the patch, uncompressed)
 12  4  output length (the new image)
 16  2  n: number of checkpoints
 18  2  0
 20  24*n checkpoints, each six u32:
        comp   offset of the checkpoint in the deflate stream (from the end of the header)
        out    offset in the output image (a multiple of 4096)
        pay    offset in the payload
        frm    position in the old image (patches; 0 for images)
        phase  1: inside a diff block, 2: inside an extra block (0 for images)
        left   bytes left in that block

detools' sequential patch (detools/create.py, apply.py): a byte (patch type << 4 | compression:
0x00 = sequential, none), the new image's size, the data-format patch's size (0 here), then
until the new image is complete: diff size, diff bytes (each added mod 256 to the next old
byte), extra size, extra bytes (copied), adjustment (added to the old position). Sizes are
detools' varints: first byte 0x80 more | 0x40 negative | 6 bits, then 7 bits per byte.
"""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path

MAGIC = b"MPZ1"
VERSION = 1
KIND_IMAGE = 0
KIND_PATCH = 1
HEADER = struct.Struct("<4sBBBxIIHxx")
CHECKPOINT = struct.Struct("<6I")
INTERVAL = 65536  # output bytes between checkpoints
WBITS = 15
DIFF, EXTRA = 1, 2


def detools_patch(old: bytes, new: bytes) -> bytes:
    """A detools sequential bsdiff patch from old to new, without inner compression."""
    import detools

    out = io.BytesIO()
    detools.create_patch(
        io.BytesIO(old),
        io.BytesIO(new),
        out,
        compression="none",
        patch_type="sequential",
        algorithm="bsdiff",
        use_mmap=False,
    )
    return out.getvalue()


class _Reader:
    def __init__(self, data: bytes):
        self.d = data
        self.p = 0

    def size(self) -> int:
        """detools' pack_size() format (detools/bsdiff.c)."""
        if self.p >= len(self.d):
            raise ValueError("the patch ends inside a size")
        b = self.d[self.p]
        self.p += 1
        neg = b & 0x40
        v = b & 0x3F
        shift = 6
        while b & 0x80:
            if self.p >= len(self.d):
                raise ValueError("the patch ends inside a size")
            b = self.d[self.p]
            self.p += 1
            v |= (b & 0x7F) << shift
            shift += 7
        return -v if neg else v


def patch_checkpoints(patch: bytes, old_len: int, interval: int = INTERVAL):
    """Walk a detools sequential patch (compression none) as the device's applier does and
    return its size and the applier's state where the output crosses each multiple of
    `interval`: [(out, pay, frm, phase, left)]."""
    r = _Reader(patch)
    if r.p >= len(patch) or patch[0] != 0x00:
        raise ValueError("not a detools sequential patch without compression (first byte 0x00)")
    r.p = 1
    to_size = r.size()
    if to_size and r.size() != 0:
        raise ValueError("detools data-format patches are not supported")
    out = frm = 0
    cps = []
    nxt = interval
    while out < to_size:
        for phase in (DIFF, EXTRA):
            n = r.size()
            if n < 0 or out + n > to_size or r.p + n > len(patch):
                raise ValueError("a patch block runs past the image or the patch")
            if phase == DIFF and (frm < 0 or frm + n > old_len):
                raise ValueError("a diff block reads outside the old image")
            while nxt <= out + n and nxt < to_size:
                k = nxt - out
                cps.append((nxt, r.p + k, frm + (k if phase == DIFF else 0), phase, n - k))
                nxt += interval
            r.p += n
            out += n
            if phase == DIFF:
                frm += n
        frm += r.size()
    if r.p != len(patch):
        raise ValueError("data after the end of the patch")
    return to_size, cps


def pack(
    payload: bytes,
    kind: int,
    out_len: int,
    cps: list,
    wbits: int = WBITS,
    level: int = 9,
) -> bytes:
    """An MPZ1 file: header + raw deflate of payload, fully flushed at each checkpoint's
    payload offset. cps: [(out, pay, frm, phase, left)] in increasing order."""
    c = zlib.compressobj(level, zlib.DEFLATED, -wbits, 9)
    body = bytearray()
    prev = 0
    entries = []
    for out, pay, frm, phase, left in cps:
        body += c.compress(payload[prev:pay])
        body += c.flush(zlib.Z_FULL_FLUSH)
        prev = pay
        entries.append((len(body), out, pay, frm, phase, left))
    body += c.compress(payload[prev:])
    body += c.flush(zlib.Z_FINISH)
    head = HEADER.pack(MAGIC, VERSION, kind, wbits, len(payload), out_len, len(entries))
    head += b"".join(CHECKPOINT.pack(*e) for e in entries)
    return head + bytes(body)


def image_transport(image: bytes, interval: int = INTERVAL, wbits: int = WBITS) -> bytes:
    """A compressed full image that resumes: a checkpoint every `interval` bytes."""
    cps = [(o, o, 0, 0, 0) for o in range(interval, len(image), interval)]
    return pack(image, KIND_IMAGE, len(image), cps, wbits)


def patch_transport(
    old: bytes, new: bytes, interval: int = INTERVAL, wbits: int = WBITS
) -> tuple[bytes, bytes]:
    """(MPZ1 file, raw detools patch) taking old to new."""
    patch = detools_patch(old, new)
    to_size, cps = patch_checkpoints(patch, len(old), interval)
    if to_size != len(new):
        raise ValueError("detools wrote a patch for %d bytes, not %d" % (to_size, len(new)))
    return pack(patch, KIND_PATCH, len(new), cps, wbits), patch


def parse_header(data: bytes) -> dict:
    if len(data) < HEADER.size:
        raise ValueError("an MPZ1 header is at least 20 bytes")
    magic, ver, kind, wbits, pay, out, n = HEADER.unpack_from(data)
    if magic != MAGIC or ver != VERSION:
        raise ValueError("not an MPZ1 file (version 1)")
    end = HEADER.size + n * CHECKPOINT.size
    cps = [CHECKPOINT.unpack_from(data, HEADER.size + i * CHECKPOINT.size) for i in range(n)]
    return {
        "kind": kind,
        "wbits": wbits,
        "payload_length": pay,
        "length": out,
        "header_length": end,
        "checkpoints": cps,
    }


def apply(old: bytes, patch: bytes) -> bytes:
    """detools' own applier (the reference the device's is tested against)."""
    import detools

    out = io.BytesIO()
    detools.apply_patch(io.BytesIO(old), io.BytesIO(patch), out)
    return out.getvalue()


def unpack(data: bytes, start: int = 0) -> bytes:
    """The payload of an MPZ1 file, inflated from checkpoint `start` (0: the beginning)."""
    h = parse_header(data)
    off = h["header_length"]
    if start:
        off += h["checkpoints"][start - 1][0]
    return zlib.decompressobj(-h["wbits"]).decompress(data[off:])


def write_patch(
    old: str | Path,
    new: str | Path,
    out_dir: Path,
    name: str,
    interval: int = INTERVAL,
    write=None,
) -> dict:
    """Write the MPZ1 patch from image `old` to image `new` as out_dir/name (with
    `write(path, data)` if given, e.g. files.Staged().write); returns its manifest entry (see
    manifest.make)."""
    from .inspect import describe_image

    o = Path(old).read_bytes()
    n = Path(new).read_bytes()
    src = describe_image(old)
    blob, _ = patch_transport(o, n, interval)
    if write is None:
        (out_dir / name).write_bytes(blob)
    else:
        write(out_dir / name, blob)
    h = parse_header(blob)
    return {
        "build": src["build"],
        "from_length": len(o),
        "from_sha": src["sha"],
        "file": name,
        "sha": hashlib.sha256(blob).hexdigest(),
        "length": len(blob),
        "header_length": h["header_length"],
        "header_sha": hashlib.sha256(blob[: h["header_length"]]).hexdigest(),
    }
