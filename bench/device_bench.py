# OTA write speed on a board, for each backend, with and without read-back verification, for a
# few write sizes. The image written is a copy of the running firmware (read from its own
# partition, which the times include); at the end the running partition is made the boot
# partition again, so the board boots what it runs now.
#
#   mpremote mip install github:OWNER/REPO      # the ota package, once
#   mpremote run bench/device_bench.py

import struct
import time

from esp32 import Partition
from ota.writer import OTA


def _ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


def _elapsed(t0):
    return time.ticks_diff(_ms(), t0) if hasattr(time, "ticks_diff") else _ms() - t0


# Length of the app image at the start of a partition: header, segments, checksum, digest.
def image_length(part):
    hdr = bytearray(24)
    part.readblocks(0, hdr)
    pos = 24
    seg = bytearray(8)
    for _ in range(hdr[1]):
        part.readblocks(pos // 4096, seg, pos % 4096)
        pos += 8 + struct.unpack("<II", seg)[1]
    pos = (pos + 16) // 16 * 16
    return pos + (32 if hdr[23] else 0)


def run(chunks=(1024, 4096, 16384)):
    src = Partition(Partition.RUNNING)
    length = image_length(src)
    backends = ["pure"]
    try:
        import _ota  # noqa: F401

        backends.append("native")
    except ImportError:
        pass
    rows = []
    try:
        for backend in backends:
            for verify in (True, False):
                for chunk in chunks:
                    buf = memoryview(bytearray(chunk))
                    t0 = _ms()
                    ota = OTA(verbose=False, length=length, verify=verify, backend=backend)
                    pos = 0
                    while pos < length:
                        n = min(chunk, length - pos)
                        src.readblocks(pos // 4096, buf[:n], pos % 4096)
                        ota.write(buf[:n])
                        pos += n
                    ota.close()
                    ms = max(1, _elapsed(t0))
                    rows.append((backend, verify, chunk, ms, length * 1000 // ms // 1024))
    finally:
        src.set_boot()  # boot what runs now
    print("Image: %d bytes (a copy of the running firmware)" % length)
    print("| backend | verify | write size | ms | KB/s |")
    print("|---|---|---|---|---|")
    for backend, verify, chunk, ms, kbps in rows:
        print("| %s | %s | %d | %d | %d |" % (backend, "on" if verify else "off", chunk, ms, kbps))
    return rows


run()
