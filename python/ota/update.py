# ota.update: firmware updates from a web server (or a file), with resume, compressed images,
# signed manifests and downgrade protection. The API of glenn20/micropython-esp32-ota v0.3:
#
#   from_file(url_or_path, sha="", length=0, verify=True, verbose=True, reboot=True, ...)
#   from_json(url, verify=True, verbose=True, reboot=True, pubkey=None, ...)
#
# The image streams from the connection into the writer through one buffer, never whole into
# RAM. After a dropped connection (or an exception, or a reboot) the download goes on from the
# last 4 KB boundary written, with an HTTP Range request; the final SHA-256 covers every byte.

import binascii
import gc
import io
import json
import os
import time

from . import http
from .writer import OTA
from .writer import reboot as _reboot

_STATE = "ota_resume.json"
_PUBKEY = "ota_pubkey.pem"


def _ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


def _exists(path):
    try:
        os.stat(path)
        return True
    except OSError:
        return False


def _read_state(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _write_state(path, st):
    with open(path, "w") as f:
        json.dump(st, f)


def _forget(path):
    try:
        os.remove(path)
    except OSError:
        pass


class _Tap(io.IOBase):
    # Counts and hashes the bytes read through it (the compressed transfer).
    def __init__(self, stream):
        import hashlib

        self.s = stream
        self.n = 0
        self.h = hashlib.sha256()

    def readinto(self, buf):
        n = self.s.readinto(buf)
        if n:
            self.n += n
            self.h.update(memoryview(buf)[:n])
        return n


def _running():
    from esp32 import Partition

    return Partition(Partition.RUNNING)


def running_version(backend=None):
    from . import _backend

    d = _backend.get(backend).describe(_running())
    return d[0] if d else None


# Refuse an image that is not newer than the running firmware, unless allowed.
def check_version(new, what, allow_downgrade=False, backend=None):
    from . import version

    if allow_downgrade or not new:
        return
    cur = running_version(backend)
    c = version.compare(new, cur) if cur else None
    if c is None:
        raise ValueError(
            "Cannot compare the %s version %r with the running firmware's %r: "
            "pass allow_downgrade=True to install it anyway." % (what, new, cur)
        )
    if c == 0:
        raise ValueError(
            "The %s version %s is the running firmware's: nothing to do "
            "(allow_downgrade=True installs it again)." % (what, new)
        )
    if c < 0:
        raise ValueError(
            "The %s version %s is older than the running firmware's %s: refused "
            "(allow_downgrade=True allows it)." % (what, new, cur)
        )


class _Download:
    def __init__(self, url, sha, length, opts):
        self.url = url
        self.sha = sha
        self.length = length
        self.o = opts  # from_file()'s keyword arguments
        self.state = opts["state"] if opts["resume"] and sha else None
        self.ota = None
        self.t0 = 0
        self.first = 0
        self.saved = 0
        self.line = False  # a progress line is open

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

    def _save(self, n):
        _write_state(
            self.state,
            {
                "url": self.url,
                "sha": self.sha,
                "length": self.length,
                "slot": self.ota.part.info()[4],
                "offset": n // 4096 * 4096,
            },
        )

    def _resume_offset(self):
        st = _read_state(self.state) if self.state else None
        if not st or (st.get("url"), st.get("sha"), st.get("length")) != (
            self.url,
            self.sha,
            self.length,
        ):
            return 0
        from .writer import next_partition

        if st.get("slot") != next_partition(_running()).info()[4]:
            return 0
        return st.get("offset", 0) if not self.o["compression"] else 0

    def _open(self, start):
        if "://" not in self.url:
            f = open(self.url, "rb")
            if start:
                f.seek(start)
            return f, start
        r = http.get(self.url, start, self.o["ca"], self.o["timeout"])
        if start and r.start != start:
            self.say("The server ignored the Range request: restarting from byte 0.")
            return r, 0
        return r, r.start

    # The image's own version (its esp_app_desc_t) must match the manifest's and be acceptable,
    # before anything is erased.
    def _check_image(self, desc):
        if not desc:
            return  # no app description: the writer refuses such an image with its own words
        v = desc[0]
        if self.o["version"] and v != self.o["version"]:
            raise ValueError(
                "The image is version %s, but the manifest says %s: refused."
                % (v, self.o["version"])
            )
        check_version(v, "image", self.o["allow_downgrade"], self.o["backend"])

    # The first 288 bytes (header, segment header, esp_app_desc_t), checked; the writer gets them.
    def _head(self, stream):
        from . import _image
        from ._backend import read_count

        head = bytearray(_image.HEAD)
        got = 0
        mv = memoryview(head)
        while got < len(head):
            n = read_count(stream.readinto(mv[got:]), len(head) - got)
            if not n:
                break
            got += n
        if got == len(head):
            self._check_image(_image.describe(mv[32:]))
        return mv[:got]

    def _writer(self, start):
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
            return OTA(*args, start=start)
        except OSError as e:
            if not start or e.args[0] != 95:  # EOPNOTSUPP: esp_ota_resume() is missing
                raise
            self.say(
                "This firmware cannot resume an update (that needs ESP-IDF v5.3.3, v5.4.2 "
                "or v5.5): starting again from byte 0."
            )
            return OTA(*args)

    def _attempt(self, start):
        self.ota = self._writer(start)
        start = self.ota.start
        stream, got = self._open(start)
        if got != start:  # the server sent the whole file
            self.ota.abort()
            self.ota = self._writer(0)
            start = 0
        tap = None
        try:
            body = stream
            if self.o["compression"]:
                import deflate

                tap = body = _Tap(stream)
                fmt = {"zlib": deflate.ZLIB, "gzip": deflate.GZIP, "deflate": deflate.RAW}
                body = deflate.DeflateIO(body, fmt[self.o["compression"]])
            self.first = start
            self.saved = start
            self.t0 = _ms()
            if start:
                self.say("Resumed at byte %d." % start)
                from . import _backend

                self._check_image(_backend.get(self.o["backend"]).describe(self.ota.part))
            else:
                self.ota.write(self._head(body))
            self.ota.write_file(body)
            self.say("", end="")
            if tap and self.o["compressed_length"] and tap.n != self.o["compressed_length"]:
                raise ValueError(
                    "Received %d compressed bytes (expect %d)."
                    % (tap.n, self.o["compressed_length"])
                )
            if tap and self.o["compressed_sha"]:
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

    def run(self):
        start = self._resume_offset()
        tries = 0
        while True:
            try:
                result = self._attempt(start)
                if self.state:
                    _forget(self.state)
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
                ):
                    self.say("", end="")
                    raise
                tries += 1
                start = (
                    0 if self.o["compression"] or not self.ota else self.ota.flashed // 4096 * 4096
                )
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
                    _forget(self.state)
                raise


def from_file(url, sha="", length=0, verify=True, verbose=True, reboot=True, **kw):
    """Write the image at url (http, https or a file path) to the next OTA partition.

    Keywords: backend, progress(bytes, length), compression ("zlib", "gzip"), compressed_sha,
    compressed_length, version (expected in the image), allow_downgrade, ca (CA certificate
    for https), retries (3), backoff (1 s, doubling), resume (True), state (the resume file,
    "ota_resume.json"), timeout (30 s).
    """
    opts = {
        "backend": None,
        "progress": None,
        "compression": None,
        "compressed_sha": "",
        "compressed_length": 0,
        "version": None,
        "allow_downgrade": False,
        "ca": None,
        "retries": 3,
        "backoff": 1,
        "resume": True,
        "state": _STATE,
        "timeout": 30,
    }
    for k in kw:
        if k not in opts:
            raise TypeError("unexpected keyword argument %r" % k)
    opts.update(kw)
    opts["verify"] = verify
    opts["verbose"] = verbose
    if verbose:
        print("Opening firmware file %s..." % url)
    if opts["version"]:
        check_version(opts["version"], "manifest", opts["allow_downgrade"], opts["backend"])
    result = _Download(url, sha, length, opts).run()
    if reboot:
        _reboot(10 if reboot is True else int(reboot))
    return result


def load_json(url, ca=None, timeout=30):
    if "://" in url:
        r = http.get(url, 0, ca, timeout)
        try:
            data = r.read()
        finally:
            r.close()
    else:
        with open(url, "rb") as f:
            data = f.read()
    try:
        return json.loads(data)
    except ValueError:
        raise ValueError("The manifest at %s is not valid JSON." % url)


def from_json(
    url, verify=True, verbose=True, reboot=True, pubkey=None, allow_downgrade=False, ca=None, **kw
):
    if verbose:
        print("Opening json file %s..." % url)
    m = load_json(url, ca, kw.get("timeout", 30))
    if not isinstance(m, dict) or not all(k in m for k in ("firmware", "sha", "length")):
        print('OTA json must include "firmware", "sha" and "length" keys.')
        raise ValueError('The manifest has no "firmware", "sha" and "length".')
    if pubkey is None and _exists(_PUBKEY):
        with open(_PUBKEY) as f:
            pubkey = f.read()
    if pubkey:
        from . import manifest

        manifest.check(m, pubkey)
        if verbose:
            print("Manifest signature: valid.")
    chip = m.get("chip")
    if chip:
        from . import _image

        # "ESP32-S3" -> "esp32s3", the names of esptool and of mpota manifest
        own = _image.CHIPS.get(_image.running_chip(_running()), "?").lower().replace("-", "")
        if chip != own:
            raise ValueError("The manifest is for %s, but this device is %s." % (chip, own))
    fw = m["firmware"]
    if "://" not in fw and not fw.startswith("/"):
        fw = url.rsplit("/", 1)[0] + "/" + fw if "/" in url else fw
    return from_file(
        fw,
        m["sha"],
        m["length"],
        verify,
        verbose,
        reboot,
        compression=m.get("compression"),
        compressed_sha=m.get("compressed_sha", ""),
        compressed_length=m.get("compressed_length", 0),
        version=m.get("version"),
        allow_downgrade=allow_downgrade,
        ca=ca,
        **kw,
    )
