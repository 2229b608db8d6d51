# esp_image_verify() as ESP-IDF runs it on an ESP32 app partition
# (components/bootloader_support/src/esp_image_format.c, v5.3-v5.5), plus the bootloader's load
# address check that only runs at boot (verify_load_addresses, BOOTLOADER_BUILD).
#
# Image: esp_image_header_t (24 bytes: magic 0xE9, segment count, SPI mode/speed/size, entry,
# wp pin, drive, chip_id u16 @12, min_chip_rev @14, min/max_chip_rev_full @15/@17,
# hash_appended @23), segments {load_addr, data_len} + data, XOR checksum (seed 0xEF) closing a
# 16-byte block, then SHA-256 of everything before it when hash_appended.
# esp_app_desc_t (256 bytes) is the first segment's data, at offset 32.

import hashlib
import struct

from espsim import errors

HEADER_MAGIC = 0xE9
APP_DESC_MAGIC = 0xABCD5432
MAX_SEGMENTS = 16
MAX_FLASH_ADDR = 0x1000000  # ESP_IMAGE_MAX_FLASH_ADDR_SIZE: 16 MB
MMU_PAGE = 0x10000  # ESP32 flash MMU page

CHIP_IDS = {
    "esp32": 0,
    "esp32s2": 2,
    "esp32c3": 5,
    "esp32s3": 9,
    "esp32c2": 12,
    "esp32c6": 13,
    "esp32h2": 16,
    "esp32p4": 18,
    "esp32c5": 23,
}

# ESP32 memory map (components/soc/esp32/include/soc/soc.h)
DROM = (0x3F400000, 0x3F800000)
IROM = (0x400D0000, 0x40400000)
DRAM = (0x3FFAE000, 0x40000000)
IRAM = (0x40080000, 0x400AA000)
RTC_IRAM = (0x400C0000, 0x400C2000)
RTC_DRAM = (0x3FF80000, 0x3FF82000)
RTC_SLOW = (0x50000000, 0x50002000)
DIRAM_IRAM = (0x400A0000, 0x400C0000)
DIRAM_DRAM = (0x3FFE0000, 0x40000000)
# The ESP32 bootloader's own RAM (components/bootloader/subproject/main/ld/esp32/bootloader.ld):
# dram_seg, which holds _dram_start.._dram_end, and the loader IRAM.
BOOTLOADER_DRAM = (0x3FFF0000, 0x3FFF6000)
BOOTLOADER_LOADER_IRAM = (0x40078000, 0x40080000)


class Invalid(errors.EspError):
    def __init__(self, reason):
        super().__init__(errors.ESP_ERR_IMAGE_INVALID, reason)


def _in(addr, rng):
    return rng[0] <= addr < rng[1]


def should_map(addr):
    return _in(addr, DROM) or _in(addr, IROM)


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


def verify(read, part_addr, part_size, flash_size, chip_id, chip_rev):
    # read(addr, n) reads absolute flash addresses. Raises Invalid, returns Metadata.
    if part_size > MAX_FLASH_ADDR:
        raise errors.EspError(errors.ESP_ERR_INVALID_ARG, "partition larger than 16MB")
    md = Metadata()
    hdr = read(part_addr, 24)
    h = header_fields(hdr)
    md.header = h
    sha = hashlib.sha256(hdr) if h["hash_appended"] else None
    if h["magic"] != HEADER_MAGIC:
        raise Invalid("image at 0x%x has invalid magic byte (nothing flashed here?)" % part_addr)
    if h["chip_id"] != chip_id:
        raise Invalid("mismatch chip ID, expected %d, found %d" % (chip_id, h["chip_id"]))
    if chip_rev < h["min_chip_rev_full"]:
        raise Invalid(
            "chip revision check failed. Required >= v%d.%d" % divmod(h["min_chip_rev_full"], 100)
        )
    mx = h["max_chip_rev_full"]
    if mx not in (0, 0xFFFF) and chip_rev > mx:
        raise Invalid("chip revision check failed. Required <= v%d.%d" % divmod(mx, 100))
    if h["segment_count"] > MAX_SEGMENTS:
        raise Invalid("segment count %d exceeds max %d" % (h["segment_count"], MAX_SEGMENTS))

    addr = part_addr + 24
    acc = 0
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
        if should_map(load_addr) and data_addr % MMU_PAGE != load_addr % MMU_PAGE:
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


def check_load_addresses(md):
    # verify_load_addresses() for every segment the bootloader copies to RAM. The bootloader's
    # stack is not modelled; its static data and loader IRAM are.
    for i, seg in enumerate(md.segments):
        load, n = seg[0], seg[1]
        # should_load(): mapped segments and addresses below 0x10000000 (0: esptool's padding
        # segments, 4: reserved for an MD5 block) are not loaded, so not checked.
        if n == 0 or should_map(load) or load < 0x10000000:
            continue
        end = load + n
        reason = None
        if _in(load, DRAM) and _in(end - 1, DRAM):
            if _overlap(load, end, BOOTLOADER_DRAM[0], BOOTLOADER_DRAM[1]):
                reason = "overlaps bootloader data"
        elif _in(load, IRAM) and _in(end - 1, IRAM):
            if _overlap(load, end, BOOTLOADER_LOADER_IRAM[0], BOOTLOADER_LOADER_IRAM[1]):
                reason = "overlaps loader IRAM"
            elif _overlap(load, end, DIRAM_IRAM[0], DIRAM_IRAM[1]):
                # ESP32 D/IRAM is mapped in reverse word order between the two buses.
                d0 = DIRAM_DRAM[0] + (DIRAM_IRAM[1] - min(end, DIRAM_IRAM[1]))
                d1 = DIRAM_DRAM[0] + (DIRAM_IRAM[1] - max(load, DIRAM_IRAM[0]))
                if _overlap(d0, d1, BOOTLOADER_DRAM[0], BOOTLOADER_DRAM[1]):
                    reason = "overlaps bootloader data"
        elif (
            (_in(load, RTC_IRAM) and _in(end - 1, RTC_IRAM))
            or (_in(load, RTC_DRAM) and _in(end - 1, RTC_DRAM))
            or (_in(load, RTC_SLOW) and _in(end - 1, RTC_SLOW))
        ):
            pass
        else:
            reason = "bad load address range"
        if reason:
            raise Invalid("Segment %d 0x%08x-0x%08x invalid: %s" % (i, load, end, reason))


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
