# The native backend: the `_ota` C module (usermod/ota_native) does the flash work, hashing and
# checks through ESP-IDF's esp_ota_* API and mbedtls (SHA hardware on ESP32). Its messages are
# those of the pure backend, word for word.

import binascii


class Session:
    def __init__(self, ota, part, confirm, length, start, erased=0):
        self.part = part
        self.progress = None
        self._ota = ota
        kw = {"erased": erased} if erased else {}
        self._u = ota.Update(
            length=length, confirm=confirm, progress=self._tick, offset=start, **kw
        )

    def _tick(self, n):
        if self.progress:
            self.progress(n)

    @property
    def nbytes(self):
        return self._u.nbytes

    # Bytes on flash; the core collects the rest until its 4 KB piece is complete.
    @property
    def flashed(self):
        return self._u.flashed

    # The slot is known erased from `flashed` up to here: the core erases 64 KB blocks ahead of
    # the data. A session resumed at `flashed` in the same boot need not erase them again.
    @property
    def erased(self):
        return self._u.erased

    def write(self, data):
        return self._u.write(data)

    def write_from(self, stream, limit=-1):
        if not hasattr(stream, "readinto") and hasattr(stream, "buffer"):
            stream = stream.buffer  # a CPython text file: read its bytes
        return self._u.write_from(stream, limit)

    # All data is in; returns the SHA-256 (hex) of the bytes received.
    def flush(self):
        n = self._u.nbytes
        if 0 < n < 288:
            self._u.finish(verify=False)  # raises the core's error for a too-short image
        if self.progress and n:
            self.progress(n)
        return binascii.hexlify(self._u.sha()).decode()

    # esp_ota_end() (ESP-IDF verifies the image), then with verify the check that the flash holds
    # the bytes received: proven from esp_ota_end()'s check for an image with an appended
    # SHA-256, else by reading it back (usermod/ota_native/ota_core.h). Errors as the pure one's.
    def finish(self, verify=True):
        self._u.finish(verify=verify)

    def commit(self):
        self._ota.set_boot(self.part.info()[4])

    def abort(self):
        self._u.abort()


class Backend:
    name = "native"

    def __init__(self, ota):
        self._ota = ota

    def session(self, part, running, confirm, length=0, start=0, erased=0):
        return Session(self._ota, part, confirm, length, start, erased)

    def state(self, part):
        return self._ota.state(part.info()[4])

    def describe(self, part):
        return self._ota.describe(part.info()[4])

    def mark_valid(self):
        self._ota.mark_valid()
