# Reads ESP-IDF's otadata partition (two esp_ota_select_entry_t records, one per 4 KB sector),
# for firmware without the native `_ota` module. Same rules as esp_ota_get_state_partition().

import binascii
import struct

from esp32 import Partition

NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF
NAMES = {
    0: "NEW",
    1: "PENDING_VERIFY",
    2: "VALID",
    3: "INVALID",
    4: "ABORTED",
    0xFFFFFFFF: "UNDEFINED",
}


def ota_partitions():
    # OTA app partitions sorted by subtype: ota_0, ota_1, ...
    parts = [p for p in Partition.find(Partition.TYPE_APP) if 0x10 <= p.info()[1] < 0x20]
    parts.sort(key=lambda p: p.info()[1])
    return parts


# [(seq, state, crc_ok), (seq, state, crc_ok)], or None without an otadata partition.
def entries():
    found = Partition.find(Partition.TYPE_DATA, 0)
    if not found:
        return None
    buf = bytearray(32)
    out = []
    for sector in (0, 1):
        found[0].readblocks(sector, buf)
        seq, _, state, crc = struct.unpack("<I20sII", buf)
        ok = crc == binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF
        out.append((seq, state, ok))
    return out


# (seq, state) of the otadata record of an OTA app partition (given by its info() tuple), or
# None if otadata has none: the rule of esp_ota_get_state_partition().
def record(info):
    ents = entries()
    count = 0
    while Partition.find(Partition.TYPE_APP, 0x10 + count):
        count += 1
    if ents is None or count == 0 or not 0x10 <= info[1] < 0x20:
        return None
    for seq, st, ok in ents:
        if ((seq - 1) & 0xFFFFFFFF) % count == info[1] - 0x10 and ok:
            return (seq, st)
    return None


# The ota state of an OTA app partition (given by its info() tuple), or None if otadata has none.
def state(info):
    r = record(info)
    return r[1] if r else None
