"""Real ESP32 images for tests and the simulator, built with esptool's image classes.

An app image has what ESP-IDF's `idf.py build` produces: the 24-byte header with the chip id,
flash-mapped DROM (its first bytes are the 256-byte `esp_app_desc_t`) and IROM segments aligned to
the 64 KB MMU pages, RAM segments, the XOR checksum and the appended SHA-256. Segment contents are
pseudo-random bytes derived from the version, so that two versions differ everywhere.
"""

from __future__ import annotations

import random
import struct

from esptool.bin_image import (
    ELFSection,
    ESP32C3FirmwareImage,
    ESP32FirmwareImage,
    ESP32S3FirmwareImage,
)

IMAGE_CLASSES = {
    "esp32": ESP32FirmwareImage,
    "esp32s3": ESP32S3FirmwareImage,
    "esp32c3": ESP32C3FirmwareImage,
}

APP_DESC_MAGIC = 0xABCD5432
BOOTLOADER_DESC_MAGIC = 0x50
SEED_IMAGE_SIZE = 1525536  # the seed README's micropython.bin: 372 blocks + 1824 bytes


def _code(rng: random.Random, n: int) -> bytes:
    """n bytes that compress about as well as firmware does (zlib: ~60%): random 64-byte
    blocks mixed with blocks repeated from a small vocabulary."""
    vocab = [rng.randbytes(64) for _ in range(64)]
    out = bytearray()
    while len(out) < n:
        out += rng.randbytes(64) if rng.random() < 0.55 else vocab[rng.randrange(64)]
    return bytes(out[:n])


def app_desc(
    version: str,
    project: str = "micropython",
    idf_ver: str = "v5.4.2",
    date: str = "Nov 27 2026",
    time: str = "12:00:00",
    secure_version: int = 0,
    elf_sha256: bytes = b"",
) -> bytes:
    """`esp_app_desc_t` (components/esp_app_format/include/esp_app_desc.h), 256 bytes."""

    def field(s: str, n: int) -> bytes:
        b = s.encode()[: n - 1]
        return b + b"\x00" * (n - len(b))

    d = struct.pack("<II8x", APP_DESC_MAGIC, secure_version)
    d += field(version, 32) + field(project, 32) + field(time, 16) + field(date, 16)
    d += field(idf_ver, 32) + (elf_sha256 or bytes(32))[:32]
    d += struct.pack("<HHBB", 0, 0xFFFF, 16, 0)  # efuse blk rev min/max, mmu page 2^16
    return d + bytes(256 - len(d))


def _image(chip: str, digest: bool = True):
    cls = IMAGE_CLASSES[chip]
    img = cls()
    img.flash_mode = 2  # DIO
    img.flash_size_freq = 0x20  # 4MB, 40MHz
    img.append_digest = digest
    img.min_rev_full = 0
    img.max_rev_full = 399
    return img


def app_image(
    version: str = "v1.24.0",
    project: str = "micropython",
    size: int | None = None,
    chip: str = "esp32",
    idf_ver: str = "v5.4.2",
    date: str = "Nov 27 2026",
    secure_version: int = 0,
    digest: bool = True,
) -> bytes:
    """A bootable app image; `size` (bytes) gives its exact length when set; `digest=False`
    leaves out the appended SHA-256 (hash_appended = 0)."""
    rng = random.Random(f"{project} {version} {chip}")
    rom = _image(chip).ROM_LOADER
    desc = app_desc(
        version,
        project,
        idf_ver,
        date,
        secure_version=secure_version,
        elf_sha256=rng.randbytes(32),
    )
    small = size is not None and size < 160 * 1024
    drom = desc + _code(rng, (2 if small else 24) * 1024)
    dram = _code(rng, (2 if small else 8) * 1024)
    iram = _code(rng, 48 * 1024)
    # The growing segment: flash-mapped code (IROM), or for images too small to reach the
    # second 64 KB MMU page, IRAM.
    grow = 256 * 1024 if size is None else max(4096, size - (8 if small else 160) * 1024) // 4 * 4
    fill = _code(rng, grow + 128 * 1024)
    if chip == "esp32":
        dram_addr, iram_addr = 0x3FFB0000, 0x40080000
    else:
        dram_addr, iram_addr = 0x3FC88000, 0x40380000

    def build(n: int) -> bytes:
        img = _image(chip, digest)
        img.entrypoint = iram_addr + 0x400
        img.segments = [
            ELFSection(b".flash.rodata", rom.DROM_MAP_START + 0x20, drom, 0),
            ELFSection(b".dram0.data", dram_addr, dram, 0),
        ]
        if small:
            img.segments.append(ELFSection(b".iram0.text", iram_addr, fill[:n], 0))
        else:
            img.segments += [
                ELFSection(b".iram0.text", iram_addr, iram, 0),
                ELFSection(b".flash.text", rom.IROM_MAP_START + 0x20, fill[:n], 0),
            ]
        return img.save(None)

    out = build(grow)
    # Padding for the MMU alignment moves with the IROM length: converge on the exact size.
    for _ in range(8):
        if size is None or len(out) == size:
            return out
        grow += size - len(out)
        if grow <= 0 or grow % 4 or grow > len(fill):
            break
        out = build(grow)
    if len(out) != size:
        raise ValueError(f"cannot build an app image of exactly {size} bytes")
    return out


def bootloader_image(chip: str = "esp32", idf_ver: str = "v5.4.2") -> bytes:
    """A 2nd stage bootloader image for `chip`: `esp_bootloader_desc_t` (magic byte 0x50) at
    offset 32 and segments in the bootloader's own RAM (each chip's bootloader.ld: dram_seg,
    iram_loader_seg, iram_seg; espsim.chips), as `idf.py bootloader` makes it, with esptool's
    image class for the chip."""
    from espsim import chips
    from esptool import bin_image

    soc = chips.get(chip)
    rng = random.Random(f"bootloader {chip}")
    img = getattr(bin_image, chip.upper() + "FirmwareImage")()
    img.flash_mode = 2  # DIO
    img.flash_size_freq = 0x20  # 4MB, 40MHz
    img.min_rev_full = soc.rev_min_full
    img.max_rev_full = soc.rev_max_full
    desc = struct.pack("<B3xI", BOOTLOADER_DESC_MAGIC, 1)
    desc += idf_ver.encode().ljust(32, b"\x00") + b"Nov 27 2026 12:00:00".ljust(24, b"\x00")
    desc += bytes(16)
    # ESP32: .dram0.bootdesc follows 0x30 bytes of .dram0.bss at the start of dram_seg
    dram = soc.bl_dram[0] + (0x30 if chip == "esp32" else 0)
    img.entrypoint = soc.bl_iram[0]
    img.segments = [
        ELFSection(b".dram0.bootdesc", dram, desc + rng.randbytes(0x2000), 0),
        ELFSection(b".iram_loader.text", soc.bl_loader_iram[0], rng.randbytes(0x4000), 0),
        ELFSection(b".iram.text", soc.bl_iram[0], rng.randbytes(0x1C00), 0),
    ]
    return img.save(None)


def merged_firmware(app: bytes, table: bytes, bootloader: bytes | None = None) -> bytes:
    """MicroPython's esp32 `firmware.bin` (ports/esp32/makeimg.py): bootloader, partition table
    and app in one file, flashed where the app's chip looks for the bootloader (0x1000 on ESP32
    and S2, 0 on S3 and C3, ...: CONFIG_BOOTLOADER_OFFSET_IN_FLASH)."""
    from espsim import chips

    soc = chips.BY_ID[int.from_bytes(app[12:14], "little")]
    bootloader = bootloader or bootloader_image(soc.name)
    at = soc.bootloader_offset
    out = bytearray(b"\xff" * (0x10000 - at))
    out[: len(bootloader)] = bootloader
    out[0x8000 - at : 0x8000 - at + len(table)] = table
    return bytes(out) + app
