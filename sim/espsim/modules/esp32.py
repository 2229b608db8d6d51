# The simulated device's `esp32` module: esp32.Partition as MicroPython's ports/esp32/
# esp32_partition.c defines it, over the simulated flash ($ESPSIM_FLASH).
# ESP-IDF failures are raised as OSError(-esp_err, "ESP_ERR_NAME"), as check_esp_err() does.

import os

from espsim import device, errors, idf, parttable

_NATIVE_BLOCK = 4096
_ENOENT = 2
_EINVAL = 22


# $ESPSIM_TRACE names a file that records the flash calls made through Partition, one per line,
# for bench/cpu.py to replay without the code that made them.
_TRACE = open(os.getenv("ESPSIM_TRACE"), "w") if os.getenv("ESPSIM_TRACE") else None


def _trace(*args):
    if _TRACE:
        _TRACE.write(" ".join(str(a) for a in args) + "\n")
        _TRACE.flush()


def _dev():
    return device.current()


# On the chip, ESP-IDF is C code with its own heap: a Partition method that fails allocates
# nothing on MicroPython's heap before it raises, and under micropython.heap_lock() the port's
# check_esp_err() raises a bare OSError() (the esp32 port has no emergency exception buffer
# unless alloc_emergency_exception_buf() is called; the unix port lacks that function, so the
# simulator always plays the default). The simulated ESP-IDF is Python, so _idf() lifts the heap
# lock while it runs and puts it back before anything is raised or returned.
try:
    from micropython import heap_lock as _heap_lock
    from micropython import heap_unlock as _heap_unlock
except ImportError:  # CPython
    _heap_lock = None

_NO = object()  # "argument not given" in _idf()
_result = None


def _locked():
    try:
        bytearray(0)
        return False
    except MemoryError:
        return True


def _unlock():
    # Returns the heap lock depth that was lifted (0: not locked). Allocates nothing.
    n = 0
    if _heap_lock is not None:
        while _locked():
            _heap_unlock()
            n += 1
    return n


def _relock(n):
    while n:
        _heap_lock()
        n -= 1


def _idf(fn, a=_NO, b=_NO, c=_NO, d=_NO):
    # fn(dev, a, b, c, d) as simulated ESP-IDF code: EspError -> OSError as check_esp_err().
    global _result
    n = _unlock()
    err = 0
    try:
        if a is _NO:
            _result = fn(_dev())
        elif b is _NO:
            _result = fn(_dev(), a)
        elif c is _NO:
            _result = fn(_dev(), a, b)
        elif d is _NO:
            _result = fn(_dev(), a, b, c)
        else:
            _result = fn(_dev(), a, b, c, d)
    except errors.EspError as e:
        err = e.code
    finally:
        _relock(n)
    if err:
        if n:
            raise OSError()
        raise errors.oserror(err)
    r = _result
    _result = None
    return r


def _find_label(dev, label):
    part = dev.find_first(parttable.TYPE_APP, parttable.SUBTYPE_ANY, label)
    if part is None:
        part = dev.find_first(parttable.TYPE_DATA, parttable.SUBTYPE_ANY, label)
    return part


def _readblocks(dev, self, block_num, buf, offset):
    _trace("readblocks", self._part.label, self._bs, block_num, len(buf), offset)
    data = dev.part_read(self._part, block_num * self._bs + offset, len(buf))
    buf[: len(data)] = data


def _writeblocks(dev, self, block_num, buf, offset):
    _trace("writeblocks", self._part.label, self._bs, block_num, len(buf), offset)
    addr = block_num * self._bs
    buf = memoryview(buf)
    if offset is None:
        if self._bs >= _NATIVE_BLOCK:
            dev.part_erase(self._part, addr, len(buf))
        else:
            self._erase_small(dev, addr, len(buf))
    else:
        addr += offset
    dev.part_write(self._part, addr, buf)


def _erase_block(dev, self, arg):
    _trace("ioctl", self._part.label, self._bs, 6, arg)
    dev.part_erase(self._part, arg * _NATIVE_BLOCK, _NATIVE_BLOCK)


def _set_boot(dev, self):
    _trace("set_boot", self._part.label)
    idf.set_boot_partition(dev, self._part)


class Partition:
    BOOT = 0
    RUNNING = 1
    TYPE_APP = parttable.TYPE_APP
    TYPE_DATA = parttable.TYPE_DATA

    def __init__(self, id, block_size=_NATIVE_BLOCK):
        if isinstance(id, int):
            if id == Partition.BOOT:
                part = _idf(idf.get_boot_partition)
            elif id == Partition.RUNNING:
                part = _idf(idf.get_running_partition)
            else:
                raise ValueError
        else:
            part = _idf(_find_label, id)
        self._init(part, block_size)

    def _init(self, part, block_size):
        if part is None:
            raise OSError(_ENOENT)
        self._part = part
        self._bs = block_size & 0xFFFF  # uint16_t in the C object
        self._cache = None

    @classmethod
    def _new(cls, part, block_size=_NATIVE_BLOCK):
        self = object.__new__(cls)
        self._init(part, block_size)
        return self

    @staticmethod
    def find(
        type=parttable.TYPE_APP,
        subtype=parttable.SUBTYPE_ANY,
        label=None,
        block_size=_NATIVE_BLOCK,
    ):
        return [Partition._new(p, block_size) for p in _dev().find(type, subtype, label)]

    def __repr__(self):
        p = self._part
        return "<Partition type=%u, subtype=%u, address=%u, size=%u, label=%s, encrypted=%u>" % (
            p.type,
            p.subtype,
            p.address,
            p.size,
            p.label,
            p.encrypted,
        )

    def info(self):
        return self._part.info()

    def readblocks(self, block_num, buf, offset=0):
        _idf(_readblocks, self, block_num, buf, offset)

    def writeblocks(self, block_num, buf, offset=None):
        _idf(_writeblocks, self, block_num, buf, offset)

    def _erase_small(self, dev, offset, n):
        # block_size < 4096: read-modify-erase each 4 KB sector, through a cache
        a = offset // _NATIVE_BLOCK * _NATIVE_BLOCK
        o = offset % _NATIVE_BLOCK
        top = offset + n
        while a < top:
            cache = None
            if o > 0 or top < a + _NATIVE_BLOCK:
                cache = dev.part_read(self._part, a, _NATIVE_BLOCK)
            dev.part_erase(self._part, a, _NATIVE_BLOCK)
            if o > 0:
                dev.part_write(self._part, a, cache[:o])
            if top < a + _NATIVE_BLOCK:
                dev.part_write(self._part, top, cache[top - a :])
            o = 0
            a += _NATIVE_BLOCK

    def ioctl(self, op, arg):
        if op in (1, 2, 3):  # INIT, DEINIT, SYNC
            return 0
        if op == 4:  # BLOCK_COUNT
            return self._part.size // self._bs
        if op == 5:  # BLOCK_SIZE
            return self._bs
        if op == 6:  # BLOCK_ERASE
            if self._bs != _NATIVE_BLOCK:
                return -_EINVAL
            _idf(_erase_block, self, arg)
            return 0
        return None

    def set_boot(self):
        _idf(_set_boot, self)

    def get_next_update(self):
        return Partition._new(_idf(idf.get_next_update_partition, self._part))

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        _idf(idf.mark_app_valid_cancel_rollback)
