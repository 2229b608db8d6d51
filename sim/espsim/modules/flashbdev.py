# The esp32 firmware's frozen `flashbdev` module (ports/esp32/modules/flashbdev.py): `bdev`, the
# block device of the filesystem partition: the data partition labelled "vfs" (MicroPython's
# partition tables), else "ffat" (TinyUF2's) with 512-byte blocks, else None.

from esp32 import Partition


def _find():
    p = Partition.find(Partition.TYPE_DATA, label="vfs")
    if p:
        return p[0]
    p = Partition.find(Partition.TYPE_DATA, label="ffat", block_size=512)
    return p[0] if p else None


bdev = _find()
