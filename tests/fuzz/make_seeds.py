"""Seed corpora for the fuzz targets of tests/fuzz/, made with the project's own tools: a
simulated 1 MB ESP32 flash (mpota.simdev) running a small old image (mpota.images) from ota_0,
real detools patches (mpota.delta) from it to the variants of mpota.pairs, with their
checkpoints, and whole images. Nothing here is committed: `make -C tests/fuzz` runs it.

    python make_seeds.py OUTDIR

writes OUTDIR/flash.bin (+ .state) and OUTDIR/seeds/{delta,head,session}/*; each seed starts
with the header its target reads (see fuzz_*.c)."""

import hashlib
import struct
import sys
from pathlib import Path

from espsim import parttable
from espsim.parttable import Part
from mpota import delta, images, pairs, simdev

OLD_LEN = 48 * 1024
TABLE = [
    Part(parttable.TYPE_DATA, 2, 0x9000, 0x4000, "nvs"),
    Part(parttable.TYPE_DATA, parttable.SUBTYPE_DATA_OTA, 0xD000, 0x2000, "otadata"),
    Part(parttable.TYPE_DATA, 1, 0xF000, 0x1000, "phy_init"),
    Part(parttable.TYPE_APP, 0x10, 0x10000, 0x70000, "ota_0"),
    Part(parttable.TYPE_APP, 0x11, 0x80000, 0x70000, "ota_1"),
]
CHECKPOINT_EVERY = 4096
DIFF, EXTRA = 1, 2


def delta_seed(length: int, old_len: int, patch: bytes, cp=None, pieces: int = 0) -> bytes:
    """fuzz_delta.c's header (32 bytes: flags, two piece-size seeds, length, old_len, out, frm,
    phase, left), then the patch from the checkpoint's payload offset."""
    flags = 1 if cp else 0
    out, pay, frm, phase, left = cp or (0, 0, 0, 0, 0)
    head = struct.pack("<BBBIIIqBQ", flags, pieces & 0xFF, (pieces * 7) & 0xFF, length,
                       old_len, out, frm, phase, left)  # fmt: skip
    return head + patch[pay:]


def session_seed(image: bytes, mode: int, chunks: int, expect: int = 0, resume: int = 0,
                 erased: int = 0) -> bytes:  # fmt: skip
    """fuzz_session.c's header (16 bytes: mode, chunk-size seed, expected length, resume offset,
    assumed-erased end, 2 spare), then the image."""
    return struct.pack("<BBIIIH", mode, chunks, expect, resume, erased, 0) + image


def main(outdir: str) -> None:
    out = Path(outdir)
    seeds = {k: out / "seeds" / k for k in ("delta", "head", "session")}
    for d in seeds.values():
        d.mkdir(parents=True, exist_ok=True)
    old = images.app_image("v1.22.0", size=OLD_LEN)
    simdev.create(out / "flash.bin", old, table=TABLE, flash_size=1 << 20)

    def put(kind: str, name: str, data: bytes) -> None:
        (seeds[kind] / name).write_bytes(data)

    for kind in pairs.KINDS:
        new = pairs.variant(old, kind)
        patch = delta.detools_patch(old, new)
        _, cps = delta.patch_checkpoints(patch, len(old), CHECKPOINT_EVERY)
        put("delta", f"{kind}", delta_seed(len(new), len(old), patch))
        put("delta", f"{kind}-pieces", delta_seed(len(new), len(old), patch, pieces=3))
        for i, cp in enumerate(cps[:: max(1, len(cps) // 4)]):
            put("delta", f"{kind}-cp{i}", delta_seed(len(new), len(old), patch, cp, pieces=i))
        length = len(new)
        sha = hashlib.sha256(new).digest()
        put("session", f"{kind}", session_seed(new, 0b0000_0110, 1, length))
        put("session", f"{kind}-unknown-length", session_seed(new, 0b0010_0100, 2))
        put("session", f"{kind}-boot", session_seed(new, 0b0001_1111, 3, length))
        put("session", f"{kind}-resume", session_seed(new, 0b0100_0110, 4, length, 8192, 65536))
        put("session", f"{kind}-sha", session_seed(new + sha, 0b1000_0110, 5, length))
    for chip in ("esp32", "esp32s3", "esp32c3", "esp32c6"):
        img = images.app_image("v1.24.0", size=32 * 1024, chip=chip)
        put("head", chip, struct.pack("<H", img[12] | img[13] << 8) + img[:288])
    put("head", "short", b"\0\0" + old[:100])


if __name__ == "__main__":
    main(sys.argv[1])
