"""`_ota` for device code run under CPython in the simulator.

The same C core (usermod/ota_native/ota_core.c) and host backend that the MicroPython unix port
links, built as build/c/libota_host.so (`make -C tests/c`, which `make test` runs), driven
through ctypes with the API of the MicroPython binding (usermod/ota_native/modota.c). Error
texts come from the core (ota_core_message), as in the binding. Set $OTA_HOST_LIB to use another
build (e.g. one built with AddressSanitizer). Without the library, `import _ota` fails as it does
on stock firmware.

As in modota.c, Python code never gets a view of C memory: a stream's readinto() is given a fresh
memoryview of a bytearray of the object's own, whose bytes are copied out when it returns; a
buffer given to Patch.readinto() is looked up again after each read of the patch (and must keep
its size); readinto() returning None means "no data yet" and is asked again.
"""

import ctypes
import errno
import os
from pathlib import Path

_LIB = os.environ.get("OTA_HOST_LIB") or str(
    Path(__file__).resolve().parents[4] / "build" / "c" / "libota_host.so"
)
if not os.path.exists(_LIB):
    raise ImportError(f"no module named '_ota' ({_LIB} is not built: make -C tests/c)")

_lib = ctypes.CDLL(_LIB)
_p = ctypes.c_void_p
_sz = ctypes.c_size_t
for _name, _res, _args in (
    ("ota_core_begin_at", ctypes.c_int, [_p, _sz, ctypes.c_uint32, _sz, _p, _sz]),
    ("ota_core_assume_erased", ctypes.c_int, [_p, _sz]),
    ("ota_core_erased", _sz, [_p]),
    ("ota_core_write", ctypes.c_int, [_p, _p, _sz]),
    ("ota_core_check_read", ctypes.c_int, [_p, ctypes.c_longlong, _sz, ctypes.c_char_p]),
    ("ota_core_space", _p, [_p, ctypes.POINTER(_sz)]),
    ("ota_core_commit", ctypes.c_int, [_p, _sz]),
    ("ota_core_finish", ctypes.c_int, [_p, _sz, _p, ctypes.c_bool, ctypes.c_bool, _p, _sz]),
    ("ota_core_abort", None, [_p]),
    ("ota_core_free", None, [_p]),
    ("ota_core_sha", None, [_p, _p]),
    ("ota_core_message", None, [_p, ctypes.c_int, _sz, _p, _p, _sz]),
    ("ota_core_partition", _p, [ctypes.c_int]),
    ("ota_core_find", _p, [ctypes.c_char_p]),
    ("ota_core_state", ctypes.c_int, [_p, ctypes.POINTER(ctypes.c_uint32)]),
    ("ota_core_describe", ctypes.c_int, [_p, _p]),
    ("ota_core_set_boot", ctypes.c_int, [_p]),
    ("ota_core_mark_valid", ctypes.c_int, []),
    ("ota_core_mark_invalid_and_reboot", ctypes.c_int, []),
    ("ota_core_rollback_possible", ctypes.c_bool, []),
    ("ota_sig_verify", ctypes.c_int, [_p, _sz, _p, _p, _sz]),
    ("esp_err_to_name", ctypes.c_char_p, [ctypes.c_int]),
    ("ota_host_counts", ctypes.POINTER(ctypes.c_uint32 * 6), []),
    ("ota_ffi_core_size", _sz, []),
    ("ota_ffi_received", _sz, [_p]),
    ("ota_ffi_written", _sz, [_p]),
    ("ota_ffi_head", _sz, [_p, ctypes.POINTER(_p)]),
    ("ota_ffi_target", ctypes.c_char_p, [_p]),
    ("ota_ffi_label", ctypes.c_char_p, [_p]),
    ("ota_ffi_delta_size", _sz, []),
    ("ota_delta_begin", ctypes.c_int, [_p, _p, _sz, _sz]),
    (
        "ota_delta_begin_at",
        ctypes.c_int,
        [_p, _p, _sz, _sz, _sz, ctypes.c_int64, ctypes.c_int, ctypes.c_uint64],
    ),
    (
        "ota_delta_run",
        ctypes.c_int,
        [_p, _p, _sz, ctypes.POINTER(_sz), _p, _sz, ctypes.POINTER(_sz)],
    ),
    ("ota_delta_end", ctypes.c_int, [_p]),
    ("ota_delta_done", ctypes.c_bool, [_p]),
):
    _f = getattr(_lib, _name)
    _f.restype, _f.argtypes = _res, _args

BUFFER_SIZE = 4096  # OTA_BUFFER_SIZE
DELTA_IN_BUF = 1024  # OTA_DELTA_IN_BUF
PROGRESS_STEP = 65536  # OTA_PROGRESS_STEP
_ERR_BASE = 0x6A00
_ERR_NO_OTA = _ERR_BASE + 10
_ERR_CLOSED = _ERR_BASE + 11
_ESP_ERR_NO_MEM, _ESP_ERR_TIMEOUT, _ESP_ERR_NOT_SUPPORTED = 0x101, 0x107, 0x106
_ESP_ERR_NOT_FOUND = 0x105


def _raise(err, upd=None):
    # As ota_raise() in modota.c.
    if _ERR_BASE <= err < _ERR_BASE + 0x100:
        out = ctypes.create_string_buffer(320)
        core = upd._core if upd else None
        _lib.ota_core_message(
            core,
            err,
            upd._expect_len if upd else 0,
            upd._expect_sha if upd else None,
            out,
            len(out),
        )
        msg = out.value.decode()
        if err == _ERR_NO_OTA:
            raise OSError(errno.ENOENT, msg)
        raise ValueError(msg)
    code = {
        _ESP_ERR_NO_MEM: errno.ENOMEM,
        _ESP_ERR_TIMEOUT: errno.ETIMEDOUT,
        _ESP_ERR_NOT_SUPPORTED: errno.EOPNOTSUPP,
    }.get(err, -err)
    raise OSError(code, _lib.esp_err_to_name(err).decode())


def _check(err, upd=None):
    if err:
        if err == _ERR_CLOSED and upd is not None and upd._finished:
            raise ValueError("This OTA update is finished: start a new Update() to write again.")
        _raise(err, upd)


_HUGE = 1 << 30  # as OTA_HUGE_COUNT in modota.c and OTA_HUGE in ota_core.c


def _count(n):
    # As ota_read_count() in modota.c: (count, what), what naming a result that is no count.
    if not isinstance(n, int):
        return 0, type(n).__name__
    if not -(1 << 62) < n < 1 << 62:  # beyond MicroPython's small ints on unix
        return 0, "huge int"
    return n, None


def _stream_error(count, what, asked):
    # As ota_raise_stream() in modota.c (and ota_core_message()).
    if what is None and not -_HUGE < count < _HUGE:
        what = "huge int"
    if what is not None:
        return ValueError(
            "Stream error: readinto() returned a %s for a buffer of %d bytes." % (what, asked)
        )
    return ValueError(
        "Stream error: readinto() returned %d for a buffer of %d bytes." % (count, asked)
    )


class Update:
    def __init__(self, length=0, confirm=False, progress=None, offset=0, erased=0):
        self._freed = True  # nothing to free until the core is begun
        self._finished = False
        if length < 0 or offset < 0 or erased < 0:
            raise ValueError("length, offset and erased must be >= 0")
        if length > 0xFFFFFFFF:  # no partition is that large
            raise ValueError("length (%d bytes) is > size of partition." % length)
        self._scratch = None
        self._core = ctypes.create_string_buffer(_lib.ota_ffi_core_size())
        self._expect_sha = ctypes.create_string_buffer(32)
        self._expect_len = 0
        self._progress = progress
        self._reported = 0
        self._freed = False
        err = _lib.ota_core_begin_at(self._core, length, 1 if confirm else 0, offset, None, 0)
        if not err and erased:
            err = _lib.ota_core_assume_erased(self._core, erased)
            if err:
                _lib.ota_core_abort(self._core)
        self._reported = self.nbytes
        _check(err, self)

    def _feed(self, data, n):
        # As modota.c: data, or (None) n bytes a stream put in the session's buffer.
        if data is None:
            _check(_lib.ota_core_commit(self._core, n), self)
        else:
            _check(_lib.ota_core_write(self._core, data, n), self)
        received = self.nbytes
        if self._progress is not None and received - self._reported >= PROGRESS_STEP:
            self._reported = received
            self._progress(received)

    def write(self, buf):
        data = bytes(memoryview(buf).cast("B"))
        self._feed(data, len(data))
        return len(data)

    def write_from(self, stream, limit=-1):
        # As modota.c for an object with a Python readinto(): a fresh memoryview of the object's
        # own buffer each read (never of the session's buffer), its bytes then written.
        room = _sz()
        total = 0
        try:
            if self._scratch is None:
                self._scratch = bytearray(BUFFER_SIZE)
            while limit < 0 or total < limit:
                space = _lib.ota_core_space(self._core, ctypes.byref(room))
                if not space:
                    _check(_ERR_CLOSED, self)
                want = room.value if limit < 0 else min(room.value, limit - total)
                n = stream.readinto(memoryview(self._scratch)[:want])
                if n is None:
                    continue  # a non-blocking stream with nothing to read yet
                # As modota.c: the core checks the count before a byte of the buffer is used.
                n, what = _count(n)
                self._what = what.encode() if what else None  # the core keeps a pointer to it
                _check(_lib.ota_core_check_read(self._core, n, want, self._what), self)
                if n == 0:
                    break
                self._feed(bytes(self._scratch[:n]), n)
                total += n
        except BaseException:
            _lib.ota_core_abort(self._core)
            raise
        return total

    def finish(self, sha=None, length=0, verify=True, set_boot=False):
        expect = None
        if sha is not None:
            sha = bytes(sha)
            if len(sha) != 32:
                raise ValueError("sha must be the 32 bytes of a SHA-256")
            ctypes.memmove(self._expect_sha, sha, 32)
            expect = self._expect_sha
        if length < 0:
            raise ValueError("length must be >= 0")
        self._expect_len = length
        _check(_lib.ota_core_finish(self._core, length, expect, verify, set_boot, None, 0), self)
        self._finished = True

    def abort(self):
        _lib.ota_core_abort(self._core)

    def sha(self):
        out = ctypes.create_string_buffer(32)
        _lib.ota_core_sha(self._core, out)
        return out.raw

    @property
    def nbytes(self):
        return _lib.ota_ffi_received(self._core)

    @property
    def flashed(self):
        return _lib.ota_ffi_written(self._core)

    @property
    def erased(self):
        return _lib.ota_core_erased(self._core)

    @property
    def partition(self):
        t = _lib.ota_ffi_target(self._core)
        return t.decode() if t else None

    @property
    def head(self):
        p = _p()
        n = _lib.ota_ffi_head(self._core, ctypes.byref(p))
        return ctypes.string_at(p, n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.abort()

    def __del__(self):
        if not self._freed:
            self._freed = True
            _lib.ota_core_abort(self._core)
            _lib.ota_core_free(self._core)


_CP_NAMES = ("comp", "out", "pay", "frm", "phase", "left")


def _cp(cp):
    # As ota_patch_cp() in modota.c: six ints from 0 to 2**30 - 1.
    if not isinstance(cp, (tuple, list)) or len(cp) != 6:
        raise ValueError("cp must be (comp, out, pay, frm, phase, left)")
    for i, v in enumerate(cp):
        if type(v) is not int or not 0 <= v < _HUGE:
            raise ValueError(
                "cp's %s (item %d) must be an int from 0 to 2**30 - 1" % (_CP_NAMES[i], i)
            )
    return cp


class Patch:
    """As modota.c's Patch: the core's applier (ota_delta.c) over the old image in partition
    `old` (a label, or an object whose info()[4] is one), pumping the patch from src."""

    def __init__(self, src, old, old_length, length, cp=None):
        if old_length < 0 or length < 0:
            raise ValueError("lengths must be >= 0")
        if cp is not None:
            cp = _cp(cp)
        part = _find(old if isinstance(old, str) else old.info()[4])
        self._d = ctypes.create_string_buffer(_lib.ota_ffi_delta_size())
        self._src = src
        self._in = ctypes.create_string_buffer(DELTA_IN_BUF)
        self._scratch = bytearray(DELTA_IN_BUF)
        self._pos = self._fill = 0
        self._eof = False
        self._closed = False
        if cp is not None:
            err = _lib.ota_delta_begin_at(
                self._d, part, old_length, length, cp[1], cp[3], cp[4], cp[5]
            )
        else:
            err = _lib.ota_delta_begin(self._d, part, old_length, length)
        _check(err)

    def _check_open(self):
        if self._closed:
            raise ValueError("This Patch is closed.")

    def _read(self):
        # As ota_patch_read(): a fresh view of the Patch's own bytearray, copied into `in`.
        readinto = self._src.readinto  # as the binding, which looks the method up once
        while True:
            n = readinto(memoryview(self._scratch))
            if n is None:
                continue  # no data yet
            n, what = _count(n)
            if what is not None or not 0 <= n <= DELTA_IN_BUF:
                raise _stream_error(n, what, DELTA_IN_BUF)
            ctypes.memmove(self._in, bytes(self._scratch[:n]), n)
            self._check_open()  # readinto() may have closed this Patch
            self._pos, self._fill = 0, n
            return n

    def _run(self, buf, at, room):
        # ota_patch_run() into buf[at:at + room] (buf None: no output); holds no export of buf
        # when it returns.
        used, made = _sz(), _sz()
        src = ctypes.addressof(self._in) + self._pos
        if buf is None:
            err = _lib.ota_delta_run(
                self._d, src, self._fill - self._pos, ctypes.byref(used), None, 0,
                ctypes.byref(made),
            )  # fmt: skip
        else:
            mv = memoryview(buf).cast("B")
            try:
                out = (ctypes.c_char * room).from_buffer(mv, at)
                err = _lib.ota_delta_run(
                    self._d, src, self._fill - self._pos, ctypes.byref(used), out, room,
                    ctypes.byref(made),
                )  # fmt: skip
                del out
            finally:
                mv.release()
        self._pos += used.value
        _check(err)
        return made.value

    def readinto(self, buf):
        self._check_open()
        size = memoryview(buf).cast("B").nbytes
        made = 0
        try:
            while made < size and not _lib.ota_delta_done(self._d):
                if self._pos == self._fill:
                    n = self._read()
                    # As ota_patch_out(): the buffer must not have been resized meanwhile.
                    if memoryview(buf).cast("B").nbytes != size:
                        raise ValueError(
                            "Patch.readinto()'s buffer was resized while the patch was read."
                        )
                    if n == 0:
                        _check(_lib.ota_delta_end(self._d))  # the patch ends too soon
                made += self._run(buf, made, size - made)
            if _lib.ota_delta_done(self._d) and not self._eof:
                # The image is complete: the patch must end here (bytes after it are an error).
                if self._pos == self._fill:
                    self._read()
                self._run(None, 0, 0)
                self._eof = True
        except BaseException:
            # The bytes made by this call are lost with its result: the Patch cannot go on.
            self._closed = True
            self._src = None
            raise
        return made

    def close(self):
        self._closed = True
        self._src = None  # src is the caller's to close


def _label(p):
    return _lib.ota_ffi_label(p).decode() if p else None


def _find(label):
    p = _lib.ota_core_find(label.encode())
    if not p:
        raise OSError(errno.ENOENT)
    return p


def running():
    return _label(_lib.ota_core_partition(0))


def boot():
    return _label(_lib.ota_core_partition(1))


def next_update():
    return _label(_lib.ota_core_partition(2))


def state(label):
    st = ctypes.c_uint32()
    err = _lib.ota_core_state(_find(label), ctypes.byref(st))
    if err in (_ESP_ERR_NOT_FOUND, _ESP_ERR_NOT_SUPPORTED):
        return None
    _check(err)
    return st.value


def describe(label):
    d = ctypes.create_string_buffer(256)
    err = _lib.ota_core_describe(_find(label), d)
    if err == _ESP_ERR_NOT_FOUND:
        return None
    _check(err)

    def s(a, n):
        return d.raw[a : a + n].split(b"\0")[0].decode()

    return (s(16, 32), s(48, 32), s(96, 16), s(80, 16), s(112, 32))


def set_boot(label):
    _check(_lib.ota_core_set_boot(_find(label)))


def mark_valid():
    _check(_lib.ota_core_mark_valid())


def mark_invalid_and_reboot():
    _check(_lib.ota_core_mark_invalid_and_reboot())


def rollback_possible():
    return bool(_lib.ota_core_rollback_possible())


def verify_signature(key, digest, signature):
    key, digest, signature = bytes(key), bytes(digest), bytes(signature)
    if len(digest) != 32:
        raise ValueError("digest must be the 32 bytes of a SHA-256")
    err = _lib.ota_sig_verify(key, len(key), digest, signature, len(signature))
    if err == _ERR_BASE + 13:  # OTA_ERR_SIGNATURE
        return False
    _check(err)
    return True


def flash_counts():
    # Host builds only, as in modota.c: the simulated flash's operation counters.
    return tuple(_lib.ota_host_counts().contents)
