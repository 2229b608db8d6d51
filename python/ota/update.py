# ota.update: firmware updates from a web server (or a file), with resume, compressed images,
# signed manifests and downgrade protection. The API of glenn20/micropython-esp32-ota v0.3:
#
#   from_file(url_or_path, sha="", length=0, verify=True, verbose=True, reboot=True, ...)
#   from_json(url, verify=True, verbose=True, reboot=True, pubkey=None, ...)
#   OTA(verify=True, verbose=True, reboot=False, sha="", length=0): from_stream(),
#   from_firmware_file(), from_json(), write(), close(), as a context manager
#
# Keywords of requests.get() (auth=, headers=, timeout=) reach the HTTP requests, as in v0.3.
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
from .writer import OTA as _Writer
from .writer import reboot as _reboot

_STATE = "ota_resume.json"
_DEADLINE = 900  # seconds for a whole from_file()/from_json() call, retries included
_PUBKEY = "ota_pubkey.pem"


def _ms():
    return time.ticks_ms() if hasattr(time, "ticks_ms") else int(time.time() * 1000)


# The time.ticks_ms() value (CPython: time.time() * 1000) `seconds` from now; None for None.
def _deadline(seconds):
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ValueError("deadline must be a number of seconds > 0, or None, not %r" % (seconds,))
    if hasattr(time, "ticks_add"):
        return time.ticks_add(time.ticks_ms(), int(seconds * 1000))
    return time.time() * 1000 + seconds * 1000


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


def _running():
    from esp32 import Partition

    return Partition(Partition.RUNNING)


def running_version(backend=None):
    from . import identity

    i = identity.running(backend)
    return i["version"] if i else None


class _Download:
    def __init__(self, url, sha, length, opts):
        self.url = url
        self.sha = sha
        self.length = length
        self.o = opts  # from_file()'s keyword arguments
        self.state = opts["state"] if opts["resume"] and sha else None
        self.ota = None
        # When the whole call must end (see _deadline()).
        self.deadline = opts["_until"] or _deadline(opts["deadline"])
        self.t0 = 0
        self.first = 0
        self.saved = 0
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

    def _save(self, n):
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
        _write_state(self.state, st)

    # Where a new attempt starts after `flashed` bytes reached the flash.
    def _restart_at(self, flashed):
        if self.mpz:
            cp = self.hdr.before(flashed) if self.hdr else None
            return cp[1] if cp else 0
        return 0 if self.o["compression"] else flashed // 4096 * 4096

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
        off = st.get("offset", 0)
        if self.mpz and off:
            from . import delta

            try:
                t = self.o["transport"]
                self.hdr = delta.Header(
                    binascii.unhexlify(st.get("header", "")), t["header_sha"], self.length
                )
                self.hdr.at(off)
                self.hdr.raw = binascii.unhexlify(st["header"])
            except (ValueError, TypeError, KeyError):
                self.hdr = None
                return 0
            return off
        if self.o["compression"] or not isinstance(off, int) or off < 0 or off % 4096:
            return 0
        # At least the image's last byte is asked for again: a Range starting at its length
        # gets HTTP 416, and the writer needs a byte to finish on.
        return min(off, (self.length - 1) // 4096 * 4096) if self.length else 0

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

        head = bytearray(_image.HEAD)
        got = 0
        mv = memoryview(head)
        while got < len(head):
            n = stream.readinto(mv[got:])
            if not n:
                break
            got += n
        self.scan = self._check_image(mv) if got == len(head) else None
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
            return _Writer(*args, start=start)
        except OSError as e:
            if not start or e.args[0] != 95:  # EOPNOTSUPP: esp_ota_resume() is missing
                raise
            self.say(
                "This firmware cannot resume an update (that needs ESP-IDF v5.3.3, v5.4.2 "
                "or v5.5): starting again from byte 0."
            )
            return _Writer(*args)

    def _attempt(self, start):
        self.ota = self._writer(start)
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
            body = delta.Patch(body, _running(), t["from_length"], self.length, cp)
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
                    or http._late(self.deadline)
                ):
                    self.say("", end="")
                    # What is on flash stays usable: the next call resumes from there.
                    if self.state and self.ota and self.ota.flashed >= 4096:
                        self._save(self.ota.flashed)
                    raise
                tries += 1
                start = self._restart_at(self.ota.flashed) if self.ota else 0
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
            except BaseException:
                # Ctrl-C or a system exit: close the writer (what is on flash stays resumable).
                if self.ota:
                    self.ota.abort()
                raise


def from_file(url, sha="", length=0, verify=True, verbose=True, reboot=True, **kw):
    """Write the image at url (http, https or a file path) to the next OTA partition.

    Keywords: backend, progress(bytes, length), compression ("zlib", "gzip"), compressed_sha,
    compressed_length, version (expected in the image), allow_downgrade, ca (CA certificate
    for https), retries (3), backoff (1 s, doubling), resume (True), state (the resume file,
    "ota_resume.json"), timeout (30 s: each wait on the network), deadline (900 s: the whole
    call, retries included; None: no limit); and requests.get()'s: headers (a dict), auth
    ((user, password), HTTP basic auth), stream and parse_headers (accepted: the download always
    streams).
    """
    opts = {
        "backend": None,
        "progress": None,
        "compression": None,
        "compressed_sha": "",
        "compressed_length": 0,
        "transport": None,  # compression "mpz": the manifest's header_length, header_sha, ...
        "version": None,
        "allow_downgrade": False,
        "ca": None,
        "retries": 3,
        "backoff": 1,
        "resume": True,
        "state": _STATE,
        "timeout": 30,
        "deadline": _DEADLINE,
        "_until": None,  # from_json(): the deadline of the whole call, already running
        "headers": None,
        "auth": None,
        "stream": None,
        "parse_headers": True,
    }
    for k in kw:
        if k not in opts:
            raise TypeError("unexpected keyword argument %r" % k)
    opts.update(kw)
    opts["verify"] = verify
    opts["verbose"] = verbose
    if verbose:
        print("Opening firmware file %s..." % url)
    from . import identity, policy

    pol = opts["policy"] = policy.Policy(opts["version"], opts["allow_downgrade"], opts["backend"])
    if verbose:
        print("Replacing %s." % identity.name(pol.running))
    pol.check_declared()
    result = _Download(url, sha, length, opts).run()
    if reboot:
        _reboot(10 if reboot is True else int(reboot))
    return result


# A manifest is small: one that is larger than this is refused without reading it whole.
_MAX_JSON = 16384


def _not_json(url, head):
    hint = " (an ESP32 app image? from_file() takes those)" if head[:1] == b"\xe9" else ""
    return ValueError(
        "The manifest at %s is not a JSON object: it starts with %r%s." % (url, head[:16], hint)
    )


# Read at most _MAX_JSON bytes of a manifest (a URL or a file) and parse it. The first bytes must
# open a JSON object, and a Content-Length (or file size) above the limit is refused before the
# body is read.
def load_json(url, ca=None, timeout=30, headers=None, auth=None, deadline=None):
    big = "The manifest at %s is larger than %d bytes: refused (a manifest is a small JSON file)."
    if "://" in url:
        f = http.get(url, 0, ca, timeout, headers, auth, deadline)
        size = f.length
    else:
        f = open(url, "rb")
        size = os.stat(url)[6]
    try:
        if size > _MAX_JSON:
            raise ValueError(big % (url, _MAX_JSON))
        buf = bytearray(_MAX_JSON + 1)
        mv = memoryview(buf)
        got = 0
        checked = False
        while got < len(buf):
            n = f.readinto(mv[got:])
            if not n:
                break
            got += n
            if not checked:
                head = bytes(mv[:got]).lstrip()
                if head[:1] not in (b"", b"{"):
                    raise _not_json(url, head)
                checked = bool(head)
    finally:
        f.close()
    if got > _MAX_JSON:
        raise ValueError(big % (url, _MAX_JSON))
    if not checked:
        raise ValueError("The manifest at %s is empty." % url)
    try:
        return json.loads(bytes(mv[:got]))
    except ValueError:
        raise ValueError("The manifest at %s is not valid JSON." % url)


def from_json(
    url, verify=True, verbose=True, reboot=True, pubkey=None, allow_downgrade=False, ca=None, **kw
):
    if verbose:
        print("Opening json file %s..." % url)
    kw["_until"] = _deadline(kw.pop("deadline", _DEADLINE))  # for the manifest and the image
    m = load_json(
        url, ca, kw.get("timeout", 30), kw.get("headers"), kw.get("auth"), kw.get("_until")
    )
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
    if not isinstance(fw, str) or not fw:
        raise ValueError('The manifest\'s "firmware" must name the image: %r' % (fw,))
    args = (m["sha"], m["length"], verify, verbose, False)
    kw["version"] = m.get("version")
    kw["allow_downgrade"] = allow_downgrade
    kw["ca"] = ca
    result = None
    if kw.pop("delta", True) and m.get("patches"):
        result = _from_patch(url, m, args, kw)
    if not result:
        result = from_file(
            _join(url, fw),
            *args,
            compression=m.get("compression"),
            compressed_sha=m.get("compressed_sha", ""),
            compressed_length=m.get("compressed_length", 0),
            transport=_transport(m, 0) if m.get("compression") == "mpz" else None,
            **kw,
        )
    if reboot:
        _reboot(10 if reboot is True else int(reboot))
    return result


# A file the manifest at url names: on the manifest's server (never a local file), or beside a
# local manifest.
def _join(url, fw):
    if "://" in url:
        return http.join(url, fw)
    if "://" not in fw and not fw.startswith("/"):
        return url.rsplit("/", 1)[0] + "/" + fw if "/" in url else fw
    return fw


# The MPZ1 transport fields of a manifest entry (the full image's, or a patch's).
def _transport(e, kind):
    t = {"kind": kind}
    for k in ("header_length", "header_sha", "from_length"):
        if k in e:
            t[k] = e[k]
    if not isinstance(t.get("header_length"), int) or not isinstance(t.get("header_sha"), str):
        raise ValueError("The manifest's MPZ1 transfer has no header_length and header_sha.")
    return t


# Update through the patch made from the running firmware (ota/delta.py), if the manifest has
# one: the running build id and the running slot's bytes must match the patch's source, checked
# before anything is erased. Returns from_file()'s result, or None (said why) for the full image.
def _from_patch(url, m, args, kw):
    from . import delta, identity

    verbose = args[3]
    running = _running()
    head = bytearray(288)
    running.readblocks(0, head)
    p, why = delta.pick(m["patches"], running, identity.build_id(head))
    if not p:
        if verbose:
            print("No patch applies (%s): downloading the full image." % why)
        return None
    try:
        f = p.get("file")
        if not isinstance(f, str) or not f:
            raise ValueError('The manifest\'s patch has no "file".')
        if verbose:
            print("Applying the patch from build %s (%s)." % (p["build"][:8], f))
        return from_file(
            _join(url, f),
            *args,
            compression="mpz",
            compressed_sha=p.get("sha", ""),
            compressed_length=p.get("length", 0),
            transport=_transport(p, delta.KIND_PATCH),
            **kw,
        )
    except (ValueError, EOFError, http.HTTPError) as e:
        if isinstance(e, http.HTTPError) and e.status >= 500:
            raise
        if verbose:
            print("The patch failed (%s): going on with the full image." % e)
        return None


# The original project's (glenn20/micropython-esp32-ota v0.3) ota.update.OTA, with its argument
# order and methods, over ota.writer.OTA: the image is checked before anything is erased, and an
# exception inside a `with` block aborts the update (v0.3 left the partial image in place).
# from_firmware_file() and from_json() go through from_file() / from_json() above (resume,
# retries, manifest signature, compression): the new partition is the boot partition when they
# return; close() then only reboots when reboot is set. from_stream() and write() feed one writer,
# which close() checks and makes the boot partition, as in v0.3.
class OTA:
    def __init__(self, verify=True, verbose=True, reboot=False, sha="", length=0):
        from .writer import _check_sha, next_partition

        self.verify = verify
        self.verbose = verbose
        self.reboot = reboot
        self.sha = _check_sha(sha)
        self.length = length
        # OSError(ENOENT) without a spare OTA partition, as v0.3's get_next_update() raises.
        self.part = next_partition(_running())
        if length and length > self.part.info()[3]:
            raise ValueError("length (%d bytes) is > size of partition." % length)
        self._w = None  # the writer: made at the first write, when sha and length are known
        self._result = None  # (bytes, sha256) once the image is the boot partition
        self._to_reboot = False  # from_firmware_file() / from_json() left close() the reboot

    def _writer(self):
        if self._result:
            raise ValueError("This update is complete: make a new OTA() for another image.")
        if not self._w:
            self._w = _Writer(self.sha, self.length, self.verify, self.verbose, self.reboot)
        return self._w

    def _expect(self, sha, length):
        from .writer import _check_sha

        if sha:
            self.sha = _check_sha(sha)
        if length:
            if length > self.part.info()[3]:
                raise ValueError("length (%d bytes) is > size of partition." % length)
            self.length = length
        if self._w:  # v0.3's set_sha_length(): checked by close()
            self._w._sha, self._w._length = self.sha, self.length

    # Append data to the image; returns its length.
    def write(self, data):
        return self._writer().write(data)

    # Write all of f (anything with readinto()); returns the bytes read from it.
    def from_stream(self, f, sha="", length=0):
        self._expect(sha, length)
        gc.collect()
        return self._writer().write_file(f)

    def _whole(self, fn, url, kw):
        if self._w or self._result:
            raise ValueError(
                "%s() writes a whole image: this OTA() already holds data from write() or "
                "from_stream()." % fn.__name__
            )
        self._result = fn(url, verify=self.verify, verbose=self.verbose, reboot=False, **kw)
        self._to_reboot = True
        return self._result[0]

    # Write the image at url (http(s) or a file); kw: from_file()'s keywords, e.g. auth=,
    # headers=. Returns its length.
    def from_firmware_file(self, url, sha="", length=0, **kw):
        self._expect(sha, length)
        kw["sha"], kw["length"] = self.sha, self.length
        return self._whole(from_file, url, kw)

    # Write the image a JSON manifest names (see from_json()); returns its length.
    def from_json(self, url, **kw):
        if not url.endswith(".json"):
            raise ValueError("Url does not end with '.json'")
        return self._whole(from_json, url, kw)

    # Check the image and make it the boot partition; reboot if asked. Returns (bytes, sha256).
    def close(self):
        if self._w:
            self._result = self._w.close()  # the writer reboots when asked
            self._w = None
        elif not self._result:
            raise ValueError("No image data was written.")
        elif self._to_reboot:
            self._to_reboot = False
            if self.reboot:
                _reboot(10 if self.reboot is True else int(self.reboot))
        return self._result

    # Give up: the boot partition stays as it was.
    def abort(self):
        if self._w:
            self._w.abort()
            self._w = None

    def __enter__(self):
        return self

    def __exit__(self, e_t, e_v, e_tr):
        if e_t is None:
            self.close()
        else:
            self.abort()


# v0.3's README calls this one as a module function too (its code has it as OTA's method only).
from_firmware_file = from_file
