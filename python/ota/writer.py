# ota.writer.OTA: write a new firmware image to the spare OTA partition, check it, and make it
# the boot partition. The API and messages are those of glenn20/micropython-esp32-ota.

import time

from esp32 import Partition

from . import _backend

_PENDING_VERIFY = 1
_ENOENT = 2
_NO_OTA = (
    "This firmware's partition table has no spare OTA partition (it needs otadata, ota_0 and "
    "ota_1): flash a firmware built with an OTA partition table, e.g. MicroPython's "
    "ESP32_GENERIC with BOARD_VARIANT=OTA."
)


# The writer that is open (at most one: two would write the same slot), or None.
_open = None


def _check_sha(sha):
    if isinstance(sha, (bytes, bytearray)):
        sha = bytes(sha).decode()
    if not isinstance(sha, str):
        raise ValueError("sha must be a string of 64 hex digits, not %r" % (sha,))
    s = sha.strip().lower()
    if s and (len(s) != 64 or [c for c in s if c not in "0123456789abcdef"]):
        raise ValueError("sha must be the image's SHA-256 as 64 hex digits, not %r" % (sha,))
    return s


# The partition to write: the next OTA partition after the running one, never the running one.
def next_partition(running):
    if not Partition.find(Partition.TYPE_DATA, 0):
        raise OSError(_ENOENT, _NO_OTA)
    try:
        part = running.get_next_update()
    except OSError:
        raise OSError(_ENOENT, _NO_OTA)
    if part.info()[2] == running.info()[2]:
        raise OSError(_ENOENT, _NO_OTA)
    return part


class OTA:
    def __init__(
        self,
        sha="",
        length=0,
        verify=True,
        verbose=True,
        reboot=False,
        backend=None,
        progress=None,
        start=0,
        erased=0,
    ):
        self._sha = _check_sha(sha)
        if not isinstance(length, int) or length < 0:
            raise ValueError("length must be the image size in bytes (>= 0), not %r" % (length,))
        self._length = length
        self._verify = verify
        self._verbose = verbose
        self._reboot = reboot
        self._progress = progress
        self._result = None
        self._dead = False  # aborted: nothing more goes to flash
        if _open:
            raise ValueError(
                "Another OTA update is open on '%s': close() or abort() it first."
                % _open.part.info()[4]
            )
        be = _backend.get(backend)
        self.backend = be.name
        running = Partition(Partition.RUNNING)
        self.part = next_partition(running)
        name, size = self.part.info()[4], self.part.info()[3]
        if length > size:
            raise ValueError("length (%d bytes) is > size of partition." % length)
        if (
            not isinstance(start, int)
            or start < 0
            or start % 4096
            or start > size
            or (length and start > length)
        ):
            raise ValueError(
                "start must be a multiple of 4096 within the image, not %r" % (start,)
            )
        if erased and (
            not isinstance(erased, int)
            or not start
            or erased % 4096
            or not start <= erased <= size
        ):
            raise ValueError(
                "erased must be a multiple of 4096 from start to the slot's end, not %r"
                % (erased,)
            )
        self._print("Writing new micropython image to OTA partition '%s'..." % name)
        self._print("Device: %d x 4096 byte blocks." % (size // 4096))
        if length:
            self._print("Writing %d blocks + %d bytes." % divmod(length, 4096))
        # ESP-IDF will not start an update while the running firmware is unconfirmed: writing an
        # update is taken as proof that it works, so it is confirmed just before the first erase.
        confirm = be.state(running) == _PENDING_VERIFY
        if confirm:
            self._print(
                "The running firmware ('%s') is not confirmed yet: it will be marked valid "
                "before the new image is written." % running.info()[4]
            )
        if not start:
            # Before the slot's old image is erased: was it a trial that rolled back?
            _bookkeeping("notice", None)
        self.start = start
        if start:
            self._print("Resuming after the first %d bytes, already written." % start)
        self._sess = be.session(self.part, running, confirm, length, start, erased)
        # The chunk buffer, when it is not the full 64 KB (the seed's output is kept as it is
        # when it is): only the pure backend has one in Python.
        if getattr(self._sess, "buffer", 65536) < 65536:
            self._print(
                "Buffer: %d bytes (no 64 KB block free on the heap): 4 KB erases, slower."
                % self._sess.buffer
            )
        self._sess.progress = self._on_progress
        self._line = False  # a progress line is open
        _set_open(self)

    def _print(self, *args, **kw):
        if self._verbose:
            print(*args, **kw)

    def _end_line(self):
        if self._line:
            print()
            self._line = False

    # Bytes of the image known to be on flash: where an interrupted update can resume.
    @property
    def flashed(self):
        return self._sess.flashed

    # The slot is known erased from `flashed` up to here (the native core erases 64 KB blocks
    # ahead of the data). An update resumed at `flashed` after a clean stop (abort() with the
    # flash untouched since) can pass it as OTA(start=flashed, erased=...): those sectors are
    # not erased again. Never after a power cut: a sector past `flashed` may be half programmed.
    @property
    def erased(self):
        return self._sess.erased

    # The BLOCK line (verbose), or the caller's progress(bytes, length) in its place.
    def _on_progress(self, n):
        if self._verbose and not self._progress:
            self._line = True
            if n % 4096:
                print("\rBLOCK %d + %d bytes" % divmod(n, 4096), end="")
            else:
                print("\rBLOCK %d" % (n // 4096 - 1), end="")
        elif self._progress:
            self._progress(n, self._length)

    # Writing is over once the update is closed or aborted: nothing more may reach the flash
    # (after close() the slot is the boot partition).
    def _check_open(self):
        if self._result:
            raise ValueError("This OTA update is closed: start a new OTA() to write again.")
        if self._dead:
            raise ValueError("This OTA update was aborted.")

    # With a length given, the update ends at the first byte past it.
    def _too_long(self, n):
        if self._length and n > self._length:
            raise ValueError("Receive %d bytes (expect %d)." % (n, self._length))

    # Append data (any bytes-like object) to the image. Any error aborts the update.
    def write(self, data):
        self._check_open()
        try:
            self._too_long(self._sess.nbytes + len(data))
            return self._sess.write(data)
        except BaseException:
            self._end_line()
            self.abort()
            raise

    # Append all of a stream (anything with readinto(), e.g. a file or r.raw of a request).
    def write_file(self, f):
        self._check_open()
        try:
            left = self._length - self._sess.nbytes + 1 if self._length else -1
            n = self._sess.write_from(f, left)
            self._too_long(self._sess.nbytes)
            return n
        except BaseException:
            self._end_line()
            self.abort()
            raise

    # Check the image and make it the boot partition. Returns (bytes, sha256 hex).
    def close(self):
        if self._result:
            return self._result
        self._check_open()
        s = self._sess
        try:
            sha = s.flush()
        except BaseException:
            self.abort()
            raise
        finally:
            self._end_line()
        n = s.nbytes
        try:
            if n == 0:
                raise ValueError("No image data was written.")
            if self._length and n != self._length:
                raise ValueError("Receive %d bytes (expect %d)." % (n, self._length))
            if self._sha and sha != self._sha:
                raise ValueError("SHA mismatch recv=%s expect=%s." % (sha, self._sha))
        except ValueError:
            self._refuse(n)
            raise
        if self._verify:
            self._print("Verifying %d blocks + %d bytes..." % divmod(n, 4096), end="")
            self._line = self._verbose
        try:
            s.finish(self._verify)
        except ValueError:
            self._end_line()
            self._refuse(n)
            raise
        except BaseException:
            self._end_line()
            self.abort()
            raise
        if self._verify:
            self._line = False
            self._print("Passed.")
        self._print("SHA256=" + sha)
        # esp_ota_set_boot_partition() checks the whole image (OSError(-5379) if invalid) and
        # only then points otadata at it.
        try:
            s.commit()
        except BaseException:
            self.abort()
            raise
        _set_open(None)
        self._sess.buf = None  # the chunk buffer is not needed any more: the heap gets it back
        _bookkeeping("booted", self.part)  # so that a rollback from it is known later
        name = self.part.info()[4]
        self._print("OTA Partition '%s' updated successfully." % name)
        self._print("Micropython will be loaded from '%s' on next hard reboot." % name)
        self._print(
            "Remember to call esp32.Partition.mark_app_valid_cancel_rollback() after reboot."
        )
        self._result = (n, sha)
        if self._reboot:
            reboot(10 if self._reboot is True else int(self._reboot))
        return self._result

    # A refused image (wrong length or SHA-256, flash that does not hold it) may still be a
    # valid app, which a later rollback or set_boot() of the spare slot would start: its first
    # sector is erased, so that nothing but a checked image can ever boot from there.
    def _refuse(self, n):
        self.abort()
        if n:
            self.part.ioctl(6, 0)  # BLOCK_ERASE of the image's first 4 KB

    # Give up: the boot partition stays as it was.
    def abort(self):
        if not self._result and not self._dead:
            self._dead = True
            if _open is self:
                _set_open(None)
            self._sess.abort()

    def __enter__(self):
        return self

    def __exit__(self, e_t, e_v, e_tr):
        if e_t is None:
            self.close()
        else:
            self.abort()


# The rollback memory (ota/history.py) is bookkeeping: when it fails (no heap left on a small
# board, a full or read-only filesystem), the update goes on and says so. Once set_boot() has
# succeeded, an exception would tell the caller that an installed update failed.
def _bookkeeping(what, part):
    from . import history

    try:
        if part is None:
            history.notice()
        else:
            history.booted(part)
    except Exception as e:
        print("ota: the update history was not updated (%s: %s)" % (type(e).__name__, e))


def _set_open(w):
    global _open
    _open = w


def reboot(delay=10):
    for i in range(delay, 0, -1):
        print("\rRebooting in %2d seconds (ctrl-C to cancel)" % i, end="")
        time.sleep(1)
    print()
    import machine

    machine.reset()
