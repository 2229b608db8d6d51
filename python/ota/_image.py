# Checks on the first bytes of a firmware image, made before anything is erased: an ESP32 app
# image starts with esp_image_header_t (magic 0xE9, chip id at offset 12), a segment header, and
# the first segment's data is esp_app_desc_t (magic word 0xABCD5432 at offset 32).

import struct

try:
    from micropython import const
except ImportError:

    def const(x):
        return x


HEAD = const(288)  # image header 24 + segment header 8 + esp_app_desc_t 256
CHIPS = {
    0: "ESP32",
    2: "ESP32-S2",
    5: "ESP32-C3",
    9: "ESP32-S3",
    12: "ESP32-C2",
    13: "ESP32-C6",
    16: "ESP32-H2",
    18: "ESP32-P4",
    23: "ESP32-C5",
}


def chip_name(cid):
    return "%s (chip id %d)" % (CHIPS.get(cid, "an unknown chip"), cid)


# The chip id of this device, read from the running firmware's own image header.
def running_chip(running):
    buf = bytearray(16)
    running.readblocks(0, buf)
    return struct.unpack_from("<H", buf, 12)[0]


# The error message for the first bytes of an image, or None when they look like an app image
# for this chip.
def error(head, chip):
    n = len(head)
    if n and head[0] != 0xE9:
        return (
            "Not an ESP32 app image: it starts with 0x%02x, not 0xe9 (use micropython.bin)."
            % (head[0])
        )
    if n < HEAD:
        return "Not an ESP32 app image: only %d bytes (an app image has at least %d)." % (n, HEAD)
    cid = struct.unpack_from("<H", head, 12)[0]
    if cid != chip:
        return "Image is for %s, but this device is %s." % (chip_name(cid), chip_name(chip))
    if head[1] > 16:
        return "Not an ESP32 app image: %d segments (at most 16)." % head[1]
    if struct.unpack_from("<I", head, 32)[0] != 0xABCD5432:
        if head[32] == 0x50:  # esp_bootloader_desc_t.magic_byte
            return (
                "This is a bootloader image, or a merged firmware.bin that starts with the "
                "bootloader: write the app image (micropython.bin) instead."
            )
        return "Not an ESP32 app image: no app description (0xabcd5432) at offset 32."
    return None


# (version, project, date, time, idf_ver) from the 256 bytes of esp_app_desc_t, or None.
def describe(desc):
    if len(desc) < 256 or struct.unpack_from("<I", desc, 0)[0] != 0xABCD5432:
        return None

    def s(a, n):
        return bytes(desc[a : a + n]).split(b"\0")[0].decode()

    return (s(16, 32), s(48, 32), s(96, 16), s(80, 16), s(112, 32))
