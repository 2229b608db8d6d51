# The simulator's own share of MicroPython's heap (see espsim/modules/simboot.py): on a board,
# the esp32 module, the flash driver and ESP-IDF are C and use no MicroPython heap; here they are
# Python on the unix port's one fixed heap. simboot loads them first and then holds the rest of
# its reserve in one block. Simulated ESP-IDF calls that allocate (image verification, otadata,
# esp_partition_find) lend that block back while they run (esp32._idf), as if they had ESP-IDF's
# heap; the hot calls (readblocks, writeblocks, ioctl) allocate nothing and do not need it.

_held = None
_size = 0


def hold(n):
    global _held, _size
    _size = max(n, 0)
    _held = bytearray(_size) if _size else None


def lend():
    # Frees the held block; True when there was one (then call back() afterwards).
    global _held
    if _held is None:
        return False
    _held = None
    return True


def back():
    # Holds the block again, after a collection (the ESP-IDF call's garbage goes first).
    global _held
    import gc

    gc.collect()
    try:
        _held = bytearray(_size)
    except MemoryError:  # the device code has taken some of it meanwhile: hold what is left
        _held = None
