# The ESP-IDF partition table: 32-byte esp_partition_info_t entries at 0x8000, an optional MD5
# entry (magic 0xEBEB, digest at offset 16 over the entries before it), then 0xFF
# (components/bootloader_support/include/esp_flash_partitions.h, src/flash_partitions.c).

import hashlib
import struct

OFFSET = 0x8000
MAX_LEN = 0xC00
ENTRY_SIZE = 32
MAGIC = 0x50AA
MAGIC_MD5 = 0xEBEB
ENTRY_FMT = "<HBBII16sI"

TYPE_APP = 0
TYPE_DATA = 1
SUBTYPE_FACTORY = 0
SUBTYPE_OTA_0 = 0x10
SUBTYPE_OTA_MAX = 0x20
SUBTYPE_TEST = 0x20
SUBTYPE_DATA_OTA = 0
SUBTYPE_ANY = 0xFF


class Part:
    # One partition table entry, shaped like esp_partition_t.
    def __init__(self, type, subtype, address, size, label, flags=0):
        self.type = type
        self.subtype = subtype
        self.address = address
        self.size = size
        self.label = label
        self.flags = flags
        self.encrypted = bool(flags & 1)

    def info(self):
        return (self.type, self.subtype, self.address, self.size, self.label, self.encrypted)

    def is_ota(self):
        return self.type == TYPE_APP and SUBTYPE_OTA_0 <= self.subtype < SUBTYPE_OTA_MAX

    def __repr__(self):
        return "<Part %s type=%d subtype=0x%02x at 0x%x size 0x%x>" % (
            self.label,
            self.type,
            self.subtype,
            self.address,
            self.size,
        )


def parse(buf, flash_size):
    # esp_partition_table_verify(): returns the partitions, raises ValueError when the table is
    # not one the bootloader would accept.
    parts = []
    md5_found = False
    n = 0
    while n < MAX_LEN // ENTRY_SIZE:
        off = n * ENTRY_SIZE
        magic, ptype, subtype, addr, size, label, flags = struct.unpack_from(ENTRY_FMT, buf, off)
        if magic == MAGIC:
            if addr > flash_size or addr + size > flash_size:
                raise ValueError(
                    "partition %d invalid - offset 0x%x size 0x%x exceeds flash chip size 0x%x"
                    % (n, addr, size, flash_size)
                )
            label = bytes(label).split(b"\x00")[0].decode()
            parts.append(Part(ptype, subtype, addr, size, label, flags))
        elif magic == MAGIC_MD5:
            if md5_found:
                raise ValueError("only one MD5 checksum is allowed")
            digest = hashlib.md5(bytes(buf[:off])).digest()
            if bytes(buf[off + 16 : off + 32]) != digest:
                raise ValueError("incorrect MD5 checksum")
            md5_found = True
        elif n != 0 and magic == 0xFFFF and ptype == 0xFF and subtype == 0xFF:
            return parts
        else:
            raise ValueError("partition %d invalid magic number 0x%x" % (n, magic))
        n += 1
    raise ValueError("partition table has no terminating entry")


def build(parts, md5=True):
    # The binary table as gen_esp32part.py writes it: entries, MD5 entry, 0xFF up to MAX_LEN.
    out = bytearray()
    for p in parts:
        label = p.label.encode()
        out += struct.pack(ENTRY_FMT, MAGIC, p.type, p.subtype, p.address, p.size, label, p.flags)
    if md5:
        out += b"\xeb\xeb" + b"\xff" * 14 + hashlib.md5(bytes(out)).digest()
    if len(out) >= MAX_LEN:
        raise ValueError("partition table too long")
    return bytes(out) + b"\xff" * (MAX_LEN - len(out))


SUBTYPE_DATA_FAT = 0x81
FS_LABELS = ("vfs", "ffat")


def fs_region(parts, flash_size):
    # The board's filesystem partition as MicroPython's esp32 port finds it: the data partition
    # labelled "vfs" (else "ffat"); when the table has neither, the one ports/esp32/main.c
    # registers at boot since v1.26 (boardctrl_startup(): esp_partition_register_external()),
    # a data/fat "vfs" from the end of the last partition to the PHYSICAL end of flash (not
    # written to the table). Returns a Part, or None (no room after the table). Whether the
    # firmware registers it (v1.26+) is device.Device's to say.
    for label in FS_LABELS:
        for p in parts:
            if p.type == TYPE_DATA and p.label == label:
                return p
    end = 0
    for p in parts:
        end = max(end, p.address + p.size)
    if end > 0 and flash_size > end:
        return Part(TYPE_DATA, SUBTYPE_DATA_FAT, end, flash_size - end, "vfs")
    return None


def seed_table():
    # The seed README's 4 MB layout (MicroPython's partitions-4MiB-ota.csv plus a vfs partition).
    return [
        Part(TYPE_DATA, 2, 0x9000, 0x4000, "nvs"),
        Part(TYPE_DATA, SUBTYPE_DATA_OTA, 0xD000, 0x2000, "otadata"),
        Part(TYPE_DATA, 1, 0xF000, 0x1000, "phy_init"),
        Part(TYPE_APP, 0x10, 0x10000, 0x180000, "ota_0"),
        Part(TYPE_APP, 0x11, 0x190000, 0x180000, "ota_1"),
        Part(TYPE_DATA, 0x81, 0x310000, 0xF0000, "vfs"),
    ]
