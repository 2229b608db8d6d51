# otadata: two 4 KB sectors, each starting with esp_ota_select_entry_t
#   {u32 ota_seq; u8 seq_label[20]; u32 ota_state; u32 crc}
# crc = esp_rom_crc32_le(UINT32_MAX, &ota_seq, 4), which is binascii.crc32(seq, 0xFFFFFFFF)
# (bootloader_common_ota_select_crc; components/app_update/otatool.py does the same).
# Rules from components/bootloader_support/src/bootloader_common_loader.c.

import binascii
import struct

ENTRY_FMT = "<I20sII"
ENTRY_SIZE = 32

NEW = 0
PENDING_VERIFY = 1
VALID = 2
INVALID = 3
ABORTED = 4
UNDEFINED = 0xFFFFFFFF

STATE_NAMES = {
    NEW: "NEW",
    PENDING_VERIFY: "PENDING_VERIFY",
    VALID: "VALID",
    INVALID: "INVALID",
    ABORTED: "ABORTED",
    UNDEFINED: "UNDEFINED",
}


def crc(seq):
    return binascii.crc32(struct.pack("<I", seq), 0xFFFFFFFF) & 0xFFFFFFFF


class Entry:
    def __init__(self, seq=0xFFFFFFFF, label=b"\xff" * 20, state=UNDEFINED, crc_=None):
        self.seq = seq
        self.label = label
        self.state = state
        self.crc = crc(seq) if crc_ is None else crc_

    @classmethod
    def unpack(cls, buf):
        seq, label, state, c = struct.unpack(ENTRY_FMT, bytes(buf[:ENTRY_SIZE]))
        return cls(seq, label, state, c)

    def pack(self):
        return struct.pack(ENTRY_FMT, self.seq, self.label, self.state, self.crc)

    def crc_ok(self):
        return self.crc == crc(self.seq)

    # bootloader_common_ota_select_invalid()
    def invalid(self):
        return self.seq == 0xFFFFFFFF or self.state == INVALID or self.state == ABORTED

    # bootloader_common_ota_select_valid()
    def valid(self):
        return not self.invalid() and self.crc_ok()

    def __repr__(self):
        return "<otadata seq=%d state=%s crc_ok=%s>" % (
            self.seq,
            STATE_NAMES.get(self.state, self.state),
            self.crc_ok(),
        )


# bootloader_common_select_otadata(): index of the entry with the max (or min) seq among the
# flagged ones, or -1.
def select(entries, flags, use_max=True):
    if flags[0] and flags[1]:
        a, b = entries[0].seq, entries[1].seq
        pick = max(a, b) if use_max else min(a, b)
        return 0 if pick == a else 1
    for i in (0, 1):
        if flags[i]:
            return i
    return -1


# bootloader_common_get_active_otadata()
def active(entries):
    return select(entries, [entries[0].valid(), entries[1].valid()], True)
