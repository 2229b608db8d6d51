# ota.download: one image from a URL (or a file) into the spare OTA partition, for
# ota.update.from_file(). The image streams from the connection into the writer through one
# buffer, never whole into RAM. After a dropped connection (or an exception, or a reboot) the
# download goes on from the last 4 KB boundary written, with an HTTP Range request, from the
# offset kept in a state file (ota/state.py); the final SHA-256 covers every byte. Compressed
# images are inflated on the fly and cut off as soon as they pass compressed_length; an MPZ1
# transfer (compression "mpz", ota/delta.py: a compressed image or a patch applied to the running
# image) resumes at its last checkpoint on flash. The image's identity is checked against the
# policy (ota/policy.py) before anything is erased.

import binascii
import gc
import io
import time

from . import http, state
from .writer import OTA as _Writer


def _ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


# The time.ticks_ms() value (CPython: time.time() * 1000) `seconds` from now; None for None.
def deadline(seconds):
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError("deadline must be a number of seconds > 0, or None, not %r" % (seconds,))
    if hasattr(time, "ticks_add"):
        return time.ticks_add(time.ticks_ms(), int(seconds * 1000))
    return time.time() * 1000 + seconds * 1000


def _running():
    from esp32 import Partition

    return Partition(Partition.RUNNING)


class _Tap(io.IOBase):
    # Counts and hashes the bytes read through it (the compressed transfer), and refuses them
    # as soon as they pass `limit` (the manifest's compressed_length), so that a server cannot
    # stream on for ever.
    def __init__(self, stream, limit=0):
        import hashlib

        self.s = stream
        self.n = 0
        self.h = hashlib.sha256()
        self.limit = limit

    def readinto(self, buf):
        n = self.s.readinto(buf)
        if n:
            self.n += n
            if self.limit and self.n > self.limit:
                raise ValueError(
                    "Received more than %d compressed bytes (compressed_length): refused."
                    % self.limit
                )
            self.h.update(memoryview(buf)[:n])
        return n


class Download:
    def __init__(self, url, sha, length, opts):
        self.url = url
        self.sha = sha
        self.length = length
        self.o = opts  # from_file()'s keyword arguments
        self.state = opts["state"] if opts["resume"] and sha else None
        self.ota = None
        # When the whole call must end (see _deadline()).
        self.deadline = opts["_until"] or deadline(opts["deadline"])
        self.t0 = 0
        self.first = 0
        self.saved = 0
        self.erased = 0  # for the next attempt: the slot is erased from its start up to here
        self.line = False  # a progress line is open
        self.scan = None  # bytes of the stream in which to look for the banner
        # MPZ1 transfers (ota/delta.py): the header, once read and checked against the manifest
        self.hdr = None
        self.mpz = opts["compression"] == "mpz"

    def say(self, *args, **kw):
        if self.o["verbose"]:
            if self.line:
                print()
                self.line = False
            print(*args, **kw)

    def _progress(self, n, total):
        if self.o["progress"]:
            self.o["progress"](n, total)
        if self.o["verbose"]:
            dt = max(1, _ms() - self.t0)
            rate = (n - self.first) * 1000 // dt // 1024
            pct = " %3d%%" % (n * 100 // total) if total else ""
            print("\r%s %d KB %d KB/s   " % (pct, n // 1024, rate), end="")
            self.line = True
        if self.state and n - self.saved >= 65536:
            self.saved = n
            self._save(n)

    # erased: the slot is erased from n up to there (a clean stop, see writer.OTA.erased).
    def _save(self, n, erased=0):
        st = {
            "url": self.url,
            "sha": self.sha,
            "length": self.length,
            "slot": self.ota.part.info()[4],
            "offset": n // 4096 * 4096,
        }
        if self.mpz:
            # An MPZ1 transfer resumes at a checkpoint: the last one on flash, and the header
            # that lists them (checked against header_sha again when it is read back).
            if not self.hdr:
                return
            cp = self.hdr.before(n)
            st["offset"] = cp[1] if cp else 0
            st["header"] = binascii.hexlify(self.hdr.raw).decode()
        if erased > n == st["offset"]:
            st["erased"] = erased
        state.write(self.state, st)

    # Where a new attempt starts after `flashed` bytes reached the flash.
    def _restart_at(self, flashed):
        if self.mpz:
            cp = self.hdr.before(flashed) if self.hdr else None
            return cp[1] if cp else 0
        return 0 if self.o["compression"] else flashed // 4096 * 4096

    # The state file's size limit: an MPZ1 transfer's state holds its header, as hex.
    def _state_limit(self):
        t = self.o["transport"] if self.mpz else None
        n = t.get("header_length") if isinstance(t, dict) else 0
        return 2048 + 2 * n if isinstance(n, int) and 0 < n < 65536 else 2048

    def _resume_offset(self):
        st = state.read(self.state, self._state_limit()) if self.state else None
        if not st or (st.get("url"), st.get("sha"), st.get("length")) != (
            self.url,
            self.sha,
            self.length,
        ):
            return 0
        from .writer import next_partition

        running = _running()
        part = next_partition(running)
        if st.get("slot") != part.info()[4]:
            return 0
        off = st.get("offset", 0)
        if not off:
            return 0
        erased = st.get("erased", 0)
        why = self._unproven(off, erased, part, running)
        if not why and self.mpz:
            from . import delta

            try:
                t = self.o["transport"]
                raw = binascii.unhexlify(st.get("header", ""))
                self.hdr = delta.Header(raw, t["header_sha"], self.length)
                self.hdr.at(off)
                self.hdr.raw = raw
            except (ValueError, TypeError, KeyError) as e:
                self.hdr = None
                why = str(e)
        if why:
            self.say("Resume state ignored (offset %r: %s): starting from byte 0." % (off, why))
            return 0
        if self.mpz:
            return off
        if self.o["compression"]:
            return 0
        if off == self.length:
            # Saved after the last byte (a length that is a multiple of 4 KB), before set_boot():
            # the last 4 KB are asked for again, as a Range from the length gets HTTP 416 and
            # the writer needs a byte to finish on.
            return off - 4096
        self.erased = erased
        return off

    # Why the saved offset (and how far the slot is erased after it) cannot be trusted, or None:
    # the state file may be damaged or hostile; only what the writer itself saves is taken.
    def _unproven(self, off, erased, part, running):
        from . import _image

        size = part.info()[3]
        if isinstance(off, bool) or not isinstance(off, int) or off < 0 or off % 4096:
            return "not a multiple of 4096"
        if off > self.length or off > size:
            return "past the image's %d bytes or the slot's %d" % (self.length, size)
        if erased and (
            isinstance(erased, bool)
            or not isinstance(erased, int)
            or erased % 4096
            or not off < erased <= size
        ):
            return "erased %r is not a 4 KB boundary after it in the slot" % (erased,)
        head = bytearray(_image.HEAD)
        part.readblocks(0, head)
        err = _image.error(head, _image.running_chip(running))
        if err:
            return "the slot does not hold the image's start: " + err
        return None

    # The file from byte `start` (an MPZ1 transfer: the checkpoint's offset in the file).
    def _open(self, start):
        if "://" not in self.url:
            f = open(self.url, "rb")
            if start:
                f.seek(start)
            return f, start
        o = self.o
        try:
            r = http.get(
                self.url, start, o["ca"], o["timeout"], o["headers"], o["auth"], self.deadline
            )
        except http.HTTPError as e:
            if not start or e.status != 416:
                raise
            # Range not satisfiable: the file on the server is not what was saved; start over.
            self.say("The server cannot resume at byte %d (HTTP 416): restarting." % start)
            return None, -1
        # Without a Content-Length, a connection closed before these bytes is a dropped
        # download (retried), not the end of the file.
        r.expect = (o["compressed_length"] if o["compression"] else self.length) - start
        if start and r.start != start:
            self.say("The server ignored the Range request: restarting from byte 0.")
            return r, 0
        return r, r.start

    # The image's identity against the policy (ota/policy.py), before anything is erased; the
    # MicroPython banner is looked for as the image streams in (limit: its first segment).
    def _check_image(self, head, start=0):
        from . import _image, identity

        desc = _image.describe(head[32:])
        if not desc:
            return None  # no app description: the writer refuses such an image in its words
        self.o["policy"].check_head(head, desc)
        if desc[0]:
            return None
        limit = identity.first_segment(head) + 32 - max(start, len(head))
        if start:
            found = identity.scan_partition(self.ota.part, start)
            if found:
                self.o["policy"].banner(found)
                return None
        return limit if limit > 0 else None

    # The first 288 bytes (header, segment header, esp_app_desc_t), checked; the writer gets them.
    def _head(self, stream):
        from . import _image
        from ._pure import read_count

        head = bytearray(_image.HEAD)
        got = 0
        mv = memoryview(head)
        while got < len(head):
            n = read_count(stream.readinto(mv[got:]), len(head) - got)
            if not n:
                break
            got += n
        self.scan = self._check_image(mv) if got == len(head) else None
        return mv[:got]

    def _writer(self, start, erased=0):
        args = (
            self.sha,
            self.length,
            self.o["verify"],
            self.o["verbose"],
            False,
            self.o["backend"],
            self._progress,
        )
        try:
            return _Writer(*args, start=start, erased=erased if start and erased > start else 0)
        except OSError as e:
            if not start or e.args[0] != 95:  # EOPNOTSUPP: esp_ota_resume() is missing
                raise
            self.say(
                "This firmware cannot resume an update (that needs ESP-IDF v5.3.3, v5.4.2 "
                "or v5.5): starting again from byte 0."
            )
            return _Writer(*args)

    def _attempt(self, start):
        self.ota = self._writer(start, self.erased)
        self.erased = 0
        start = self.ota.start
        at = start
        if self.mpz and start:
            at = self.hdr.at(start)[0]
        stream, got = self._open(at)
        if got < 0:  # HTTP 416
            self.ota.abort()
            self.ota = self._writer(0)
            stream, got = self._open(0)
            start = at = 0
        if got != at:  # the server sent the whole file
            self.ota.abort()
            self.ota = self._writer(0)
            start = at = 0
        tap = None
        try:
            body = stream
            if self.mpz:
                tap, body = self._mpz(stream, start, at)
            elif self.o["compression"]:
                import deflate

                tap = body = _Tap(stream, self.o["compressed_length"])
                fmt = {"zlib": deflate.ZLIB, "gzip": deflate.GZIP, "deflate": deflate.RAW}
                body = deflate.DeflateIO(body, fmt[self.o["compression"]])
            self.first = start
            self.saved = start
            self.t0 = _ms()
            if start:
                self.say("Resumed at byte %d." % start)
                from . import _image

                head = bytearray(_image.HEAD)
                self.ota.part.readblocks(0, head)
                self.scan = self._check_image(head, start)
            else:
                self.ota.write(self._head(body))
            if self.scan:
                from . import identity

                body = identity.Tap(body, self.scan, self.o["policy"].banner)
            self.ota.write_file(body)
            self.say("", end="")
            if self.mpz:
                self._mpz_end(tap, body, at)
            elif tap and self.o["compressed_length"] and tap.n != self.o["compressed_length"]:
                raise ValueError(
                    "Received %d compressed bytes (expect %d)."
                    % (tap.n, self.o["compressed_length"])
                )
            # After a resume the tap saw only the file's tail: the image's SHA-256 covers it all.
            if tap and self.o["compressed_sha"] and not at:
                got = binascii.hexlify(tap.h.digest()).decode()
                if got != self.o["compressed_sha"]:
                    raise ValueError(
                        "Compressed SHA mismatch recv=%s expect=%s."
                        % (got, self.o["compressed_sha"])
                    )
            return self.ota.close()
        except EOFError:
            raise ValueError("The compressed image is truncated or corrupted.")
        finally:
            stream.close()

    # An MPZ1 transfer (ota/delta.py) read from file offset `at`: its header first when at is 0,
    # then the raw deflate stream, from the checkpoint for output byte `start`; for a patch, the
    # applier over the running partition. Returns (tap, body).
    def _mpz(self, stream, start, at):
        from . import delta

        t = self.o["transport"]
        tap = _Tap(stream, self.o["compressed_length"])
        tap.n = at
        if not at:
            raw = bytearray(t["header_length"])
            mv = memoryview(raw)
            got = 0
            while got < len(raw):
                n = tap.readinto(mv[got:])
                if not n:
                    raise ValueError("The transfer ends inside its header.")
                got += n
            self.hdr = delta.Header(raw, t["header_sha"], self.length)
            self.hdr.raw = raw
        h = self.hdr
        if h.kind != t["kind"]:
            raise ValueError("The transfer holds another kind of data than the manifest says.")
        body = delta.Inflate(tap, h.wbits)
        if h.kind == delta.KIND_PATCH:
            cp = h.at(start) if start else None
            body, lang = delta.applier(
                body, _running(), t["from_length"], self.length, cp, self.ota.backend
            )
            self.say("Patch applier: %s." % lang)
        return tap, body

    def _mpz_end(self, tap, body, at):
        one = bytearray(1)
        if body.readinto(one):
            raise ValueError("The transfer holds more than the image.")
        while tap.readinto(one):
            pass
        want = self.o["compressed_length"]
        if want and tap.n != want:
            raise ValueError("Received %d compressed bytes (expect %d)." % (tap.n, want))
        if at:
            self.say("Resumed at a checkpoint: the image's SHA-256 covers every byte.")

    def run(self):
        start = self._resume_offset()
        tries = 0
        while True:
            try:
                result = self._attempt(start)
                if self.state:
                    state.forget(self.state)
                return result
            except http.NetError as e:
                # Network trouble: go on from what is on flash, unless the server said no.
                if self.ota:
                    self.ota.abort()
                status = e.status
                if (
                    (status and status < 500)
                    or tries >= self.o["retries"]
                    or "://" not in self.url
                    or http._late(self.deadline)
                ):
                    self.say("", end="")
                    # What is on flash stays usable: the next call resumes from there.
                    if self.state and self.ota and self.ota.flashed >= 4096:
                        self._save(self.ota.flashed, self.ota.erased)
                    raise
                tries += 1
                start = self._restart_at(self.ota.flashed) if self.ota else 0
                # The writer stopped cleanly: what it erased ahead of its data is still erased.
                if self.ota and start == self.ota.flashed:
                    self.erased = self.ota.erased
                if self.state and self.ota and start:
                    self._save(start)
                self.say(
                    "%s: retrying from byte %d (%d of %d)." % (e, start, tries, self.o["retries"])
                )
                self.ota = None
                gc.collect()
                time.sleep(min(self.o["backoff"] * 2 ** (tries - 1), 30))
            except Exception:
                # Bad input: the partial image is of no use to a later attempt.
                self.say("", end="")
                if self.ota:
                    self.ota.abort()
                if self.state:
                    state.forget(self.state)
                raise
            except BaseException:
                # Ctrl-C or a system exit: close the writer (what is on flash stays resumable).
                if self.ota:
                    self.ota.abort()
                raise
