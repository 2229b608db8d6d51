# The simulated device's `esp32` module: esp32.Partition as MicroPython's ports/esp32/
# esp32_partition.c defines it, over the simulated flash ($ESPSIM_FLASH).
# ESP-IDF failures are raised as OSError(-esp_err, "ESP_ERR_NAME"), as check_esp_err() does.
#
# On the chip, Partition's methods are C: a read, write or erase allocates nothing on
# MicroPython's heap. Here they run on that heap, so they are written to allocate nothing per
# call either (the caller's buffer is never copied; the flash's scratch buffer is reused):
# tests/test_simulator.py fails if a per-call allocation comes back.

import os

from espsim import device, errors, heap, idf, parttable

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


def _unlock():
    # Returns the heap lock depth that was lifted (0: not locked). Allocates nothing:
    # heap_unlock() returns the depth left, so lock once more and unlock to read it.
    if _heap_lock is None:
        return 0
    _heap_lock()
    n = _heap_unlock()
    for _ in range(n):
        _heap_unlock()
    return n


def _relock(n):
    while n:
        _heap_lock()
        n -= 1


def _idf(fn, a=_NO, b=_NO, c=_NO, d=_NO):
    # fn(dev, a, b, c, d) as simulated ESP-IDF code: EspError -> OSError as check_esp_err().
    global _result
    n = _unlock()
    lent = heap.lend()  # ESP-IDF's own heap (espsim/heap.py)
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
        if lent:
            heap.back()
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


# readblocks, writeblocks and ioctl(BLOCK_ERASE) run for every chunk of an update. Besides not
# copying buffers, their Python frames must stay small: MicroPython puts a frame of more than 11
# words (locals + value stack + 3 per active try) on the heap (py/objfun.c,
# VM_MAX_STATE_ON_STACK). So the arguments travel in the Partition object (self._blk, _buf,
# _off: attributes made in _init, so storing them allocates nothing), and _run() is the one try.
# _trace is called only when tracing: its *args tuple is an allocation.
def _try(self):
    # self._fn(self); the esp_err_t it raised, else 0. (`except ... as e` would put this frame
    # on the heap: it adds a try/finally that clears e.)
    try:
        self._fn(self)
    except errors.EspError:
        return errors.EspError.last
    except BaseException:  # a power cut, a bad argument: the heap lock is put back
        _relock(self._locks)
        self._buf = None
        raise
    return 0


def _run(fn, self):
    # fn(self) as simulated ESP-IDF code, with the heap lock lifted: EspError -> OSError.
    self._fn = fn
    self._locks = n = _unlock()
    err = _try(self)
    _relock(n)
    self._buf = None  # not kept: the caller's buffer
    if err:
        if n:
            raise OSError()
        raise errors.oserror(err)


def _readblocks(self):
    if _TRACE:
        _trace("readblocks", self._part.label, self._bs, self._blk, len(self._buf), self._off)
    addr = self._blk * self._bs + self._off
    _dev().part_readinto(self._part, addr, self._buf)


def _writeblocks(self):
    if _TRACE:
        _trace("writeblocks", self._part.label, self._bs, self._blk, len(self._buf), self._off)
    dev = _dev()
    addr = self._blk * self._bs
    if self._off is None:
        if self._bs >= _NATIVE_BLOCK:
            dev.part_erase(self._part, addr, len(self._buf))
        else:
            self._erase_small(dev, addr, len(self._buf))
    else:
        addr += self._off
    dev.part_write(self._part, addr, self._buf)


def _erase_block(self):
    if _TRACE:
        _trace("ioctl", self._part.label, self._bs, 6, self._blk)
    _dev().part_erase(self._part, self._blk * _NATIVE_BLOCK, _NATIVE_BLOCK)


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
        self._fn = None  # the call in progress and its arguments (see _run)
        self._locks = 0
        self._blk = 0
        self._buf = None
        self._off = None

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
        self._blk, self._buf, self._off = block_num, buf, offset
        _run(_readblocks, self)

    def writeblocks(self, block_num, buf, offset=None):
        self._blk, self._buf, self._off = block_num, buf, offset
        _run(_writeblocks, self)

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
            self._blk = arg
            _run(_erase_block, self)
            return 0
        return None

    def set_boot(self):
        _idf(_set_boot, self)

    def get_next_update(self):
        return Partition._new(_idf(idf.get_next_update_partition, self._part))

    @classmethod
    def mark_app_valid_cancel_rollback(cls):
        _idf(idf.mark_app_valid_cancel_rollback)
