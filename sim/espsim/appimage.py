# esp_image_verify() as ESP-IDF runs it on an ESP32 app partition
# (components/bootloader_support/src/esp_image_format.c, v5.3-v5.5), plus the bootloader's load
# address check that only runs at boot (verify_load_addresses, BOOTLOADER_BUILD).
#
# Image: esp_image_header_t (24 bytes: magic 0xE9, segment count, SPI mode/speed/size, entry,
# wp pin, drive, chip_id u16 @12, min_chip_rev @14, min/max_chip_rev_full @15/@17,
# hash_appended @23), segments {load_addr, data_len} + data, XOR checksum (seed 0xEF) closing a
# 16-byte block, then SHA-256 of everything before it when hash_appended.
# esp_app_desc_t (256 bytes) is the first segment's data, at offset 32.
# Each chip's memory map, MMU page and revisions: espsim/chips.py.

import hashlib
import struct

from espsim import chips, errors

HEADER_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
MAX_SEGMENTS = 16
MAX_FLASH_ADDR = 0x1000000  # ESP_IMAGE_MAX_FLASH_ADDR_SIZE: 16 MB
MMU_PAGE = chips.MMU_PAGE
STACK_LOAD_HEADROOM = 32768

CHIP_IDS = {}
for _c in chips.CHIPS.values():
    CHIP_IDS[_c.name] = _c.chip_id


class Invalid(errors.EspError):
    def __init__(self, reason, code=errors.ESP_ERR_IMAGE_INVALID):
        super().__init__(code, reason)


def _in(addr, rng):
    return rng is not None and rng[0] <= addr < rng[1]


def _chip(chip):
    # A chips.Chip, or the esp_chip_id_t of one.
    return chip if isinstance(chip, chips.Chip) else chips.BY_ID[chip]


def should_map(addr, chip=0):
    return _chip(chip).should_map(addr)


def should_load(addr, chip=0):
    # should_load() after a reset other than a deep-sleep wake: flash-mapped segments are mapped,
    # not loaded, and addresses below 0x10000000 (0: esptool's padding) are never loaded.
    return not _chip(chip).should_map(addr) and addr >= chips.ROM_LOADED_LIMIT


def _xor_fold(acc, nbytes):
    # XOR of all bytes of an nbytes-wide little-endian integer (nbytes a power of two).
    bits = nbytes * 8
    while bits > 8:
        bits //= 2
        acc = (acc >> bits) ^ (acc & ((1 << bits) - 1))
    return acc


class Metadata:
    def __init__(self):
        self.image_len = 0
        self.segments = []  # (load_addr, data_len, offset of the data in the partition)
        self.header = None
        self.digest = None
        self.chip = None


def header_fields(hdr):
    magic, nseg, mode, speedsize, entry = struct.unpack_from("<BBBBI", hdr, 0)
    chip_id, min_rev, min_full, max_full = struct.unpack_from("<HBHH", hdr, 12)
    return {
        "magic": magic,
        "segment_count": nseg,
        "spi_mode": mode,
        "entry": entry,
        "chip_id": chip_id,
        "min_chip_rev": min_rev,
        "min_chip_rev_full": min_full,
        "max_chip_rev_full": max_full,
        "hash_appended": hdr[23],
    }


def verify(read, part_addr, part_size, flash_size, chip, chip_rev):
    # esp_image_verify(ESP_IMAGE_VERIFY) of an app for chip (a chips.Chip or its chip id) at
    # revision chip_rev (major * 100 + minor). read(addr, n) reads absolute flash addresses.
    # Raises Invalid (ESP_FAIL for the chip and revision checks, as
    # bootloader_common_check_chip_validity() returns), returns Metadata.
    chip = _chip(chip)
    if part_size > MAX_FLASH_ADDR:
        raise errors.EspError(errors.ESP_ERR_INVALID_ARG, "partition larger than 16MB")
    md = Metadata()
    md.chip = chip
    hdr = read(part_addr, 24)
    h = header_fields(hdr)
    md.header = h
    sha = hashlib.sha256(hdr) if h["hash_appended"] else None
    if h["magic"] != HEADER_MAGIC:
        raise Invalid("image at 0x%x has invalid magic byte (nothing flashed here?)" % part_addr)
    if h["chip_id"] != chip.chip_id:
        raise Invalid(
            "mismatch chip ID, expected %d, found %d (an image for %s on %s)"
            % (chip.chip_id, h["chip_id"], chips.display_name(h["chip_id"]), chip.display),
            errors.ESP_FAIL,
        )
    found = divmod(chip_rev, 100)
    if chip_rev < h["min_chip_rev_full"]:
        raise Invalid(
            "chip revision check failed. Required >= v%d.%d, found v%d.%d."
            % (divmod(h["min_chip_rev_full"], 100) + found),
            errors.ESP_FAIL,
        )
    mx = h["max_chip_rev_full"]
    if mx not in (0, 0xFFFF) and chip_rev > mx:
        raise Invalid(
            "chip revision check failed. Required <= v%d.%d, found v%d.%d."
            % (divmod(mx, 100) + found),
            errors.ESP_FAIL,
        )
    if h["segment_count"] > MAX_SEGMENTS:
        raise Invalid("segment count %d exceeds max %d" % (h["segment_count"], MAX_SEGMENTS))

    addr = part_addr + 24
    acc = 0
    mmu_page = chips.MMU_PAGE
    for i in range(h["segment_count"]):
        if addr + 8 > flash_size:
            raise errors.EspError(errors.ESP_FAIL, "segment header beyond flash")
        sh = read(addr, 8)
        if sha:
            sha.update(sh)
        load_addr, data_len = struct.unpack("<II", sh)
        data_addr = addr + 8
        if data_len & 3 or data_len >= MAX_FLASH_ADDR:
            raise Invalid("invalid segment length 0x%x" % data_len)
        if i == 0 and chip.mmu_page_configurable:
            # SOC_MMU_PAGE_SIZE_CONFIGURABLE: the page size the image was built for, from its
            # esp_app_desc_t (log2; 0 in images older than the field: CONFIG_MMU_PAGE_SIZE).
            desc = read(data_addr, 256) if data_addr + 256 <= flash_size else b""
            if len(desc) < 256 or struct.unpack_from("<I", desc, 0)[0] != APP_DESC_MAGIC:
                raise Invalid("Failed to fetch app description header!", errors.ESP_FAIL)
            if desc[0xB4]:
                mmu_page = 1 << desc[0xB4]
        if chip.should_map(load_addr) and data_addr % mmu_page != load_addr % mmu_page:
            raise Invalid(
                "Segment %d load address 0x%08x, doesn't match data 0x%08x"
                % (i, load_addr, data_addr)
            )
        if data_addr + data_len > flash_size:
            raise errors.EspError(errors.ESP_FAIL, "bootloader_mmap failed")
        pos = data_addr
        end = data_addr + data_len
        while pos < end:
            n = min(4096, end - pos)
            chunk = read(pos, n)
            acc ^= int.from_bytes(chunk, "little")
            if sha:
                sha.update(chunk)
            pos += n
        md.segments.append((load_addr, data_len, data_addr - part_addr))
        addr = end
    calc = (_xor_fold(acc, 4096) ^ 0xEF) & 0xFF

    unpadded = addr - part_addr
    pad = ((unpadded + 1 + 15) & ~15) - unpadded
    if addr + pad > flash_size:
        raise errors.EspError(errors.ESP_FAIL, "checksum beyond flash")
    tail = read(addr, pad)
    if tail[pad - 1] != calc:
        raise Invalid("Checksum failed. Calculated 0x%x read 0x%x" % (calc, tail[pad - 1]))
    if sha:
        sha.update(tail)
    md.image_len = unpadded + pad
    if h["hash_appended"]:
        if part_addr + md.image_len + 32 > flash_size:
            raise errors.EspError(errors.ESP_FAIL, "digest beyond flash")
        md.digest = read(part_addr + md.image_len, 32)
        md.image_len += 32
    if md.image_len > part_size:
        raise Invalid(
            "Image length %d doesn't fit in partition length %d" % (md.image_len, part_size)
        )
    if sha and sha.digest() != md.digest:
        raise Invalid("Image hash failed - image is corrupt")
    return md


def _overlap(a0, a1, b0, b1):
    return a0 < b1 and b0 < a1


def _diram_dram_to_iram(c, p):
    if c.diram_inverted:
        return c.diram_iram[0] + (c.diram_dram[1] - p) - 4
    return c.diram_iram[0] + (p - c.diram_dram[0])


def _diram_iram_to_dram(c, p):
    if c.diram_inverted:
        return c.diram_dram[0] + (c.diram_iram[1] - p) - 4
    return c.diram_dram[0] + (p - c.diram_iram[0])


def _load_error(c, load, end, no_recurse=False):
    # verify_load_addresses(): the reason the bootloader refuses to copy [load, end) to RAM, or
    # None. The bootloader's stack pointer is taken at SOC_ROM_STACK_START (the least it can
    # be), its static data and loader IRAM as their bootloader.ld segments.
    last = end - 1
    if _in(load, c.dram) and _in(last, c.dram):
        if _overlap(c.rom_stack_start - STACK_LOAD_HEADROOM, c.rom_stack_start, load, end):
            return "overlaps bootloader stack"
        if _overlap(c.bl_dram[0], c.bl_dram[1], load, end):
            return "overlaps bootloader data"
        lo, hi = c.diram_dram
        if not no_recurse and _overlap(lo, hi, load, end):
            a = _diram_dram_to_iram(c, load if _in(load, c.diram_dram) else lo)
            b = _diram_dram_to_iram(c, end if _in(last, c.diram_dram) else hi)
            return _load_error(c, min(a, b), max(a, b), True)
        return None
    if _in(load, c.iram) and _in(last, c.iram):
        if _overlap(c.bl_loader_iram[0], c.bl_loader_iram[1], load, end):
            return "overlaps loader IRAM"
        lo, hi = c.diram_iram
        # esp_ptr_in_diram_iram() is false on chips whose D/IRAM share addresses
        shared = c.diram_iram[0] == c.diram_dram[0]
        if not no_recurse and _overlap(lo, hi, load, end):
            a = _diram_iram_to_dram(c, load if _in(load, c.diram_iram) and not shared else lo)
            b = _diram_iram_to_dram(c, end if _in(last, c.diram_iram) and not shared else hi)
            return _load_error(c, min(a, b), max(a, b), True)
        return None
    for rng in (c.rtc_iram, c.rtc_dram, c.rtc_slow):
        if _in(load, rng) and _in(last, rng):
            return None
    return "bad load address range"


def check_load_addresses(md, chip=None):
    # The bootloader's load (ESP_IMAGE_LOAD) of a verified image: verify_load_addresses() for
    # every segment that should_load() copies to RAM; padding (load address 0) and other
    # segments below 0x10000000 and flash-mapped ones are skipped.
    c = _chip(chip) if chip is not None else md.chip
    for i, seg in enumerate(md.segments):
        load, n = seg[0], seg[1]
        if n == 0 or not should_load(load, c):
            continue
        reason = _load_error(c, load, load + n)
        if reason:
            raise Invalid("Segment %d 0x%08x-0x%08x invalid: %s" % (i, load, load + n, reason))


def app_desc(buf):
    # esp_app_desc_t fields, or None when the magic word is missing.
    if len(buf) < 256 or struct.unpack_from("<I", buf, 0)[0] != APP_DESC_MAGIC:
        return None

    def s(a, n):
        return bytes(buf[a : a + n]).split(b"\x00")[0].decode()

    return {
        "secure_version": struct.unpack_from("<I", buf, 4)[0],
        "version": s(16, 32),
        "project_name": s(48, 32),
        "time": s(80, 16),
        "date": s(96, 16),
        "idf_ver": s(112, 32),
    }
