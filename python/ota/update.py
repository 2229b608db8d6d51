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
# The download itself (resume, retries, compression, limits) is ota/download.py; the version
# policy ota/policy.py; state files ota/state.py; the signed form ota/manifest.py.

import gc

from . import download, http, manifest
from .writer import OTA as _Writer
from .writer import reboot as _reboot

_STATE = "ota_resume.json"
_DEADLINE = 900  # seconds for a whole from_file()/from_json() call, retries included


def _running():
    from esp32 import Partition

    return Partition(Partition.RUNNING)


def running_version(backend=None):
    from . import identity

    i = identity.running(backend)
    return i["version"] if i else None


def from_file(url, sha="", length=0, verify=True, verbose=True, reboot=True, **kw):
    """Write the image at url (http, https or a file path) to the next OTA partition.

    Keywords: backend, progress(bytes, length), compression ("zlib", "gzip", "mpz"),
    compressed_sha, compressed_length, transport (compression "mpz": the manifest's MPZ1
    fields, see from_json()), version (expected in the image), allow_downgrade, force (install a
    build this device rolled back from, skip the version checks), ca (CA certificate for
    https), retries (3), backoff (1 s, doubling), resume (True), state (the resume file,
    "ota_resume.json" at the filesystem's root), timeout (30 s: each wait on the network),
    deadline (900 s: the whole call, retries included; None: no limit); and requests.get()'s:
    headers (a dict), auth ((user, password), HTTP basic auth), stream and parse_headers
    (accepted: the download always streams).
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
        "force": False,
        "ca": None,
        "retries": 3,
        "backoff": 1,
        "resume": True,
        "state": _STATE,
        "timeout": 30,
        "deadline": _DEADLINE,
        "_until": None,  # from_json(): the deadline of the whole call, already running
        "_micropython": None,  # from_json(): the manifest's "micropython" and "build"
        "_build": None,
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
    if opts["compression"] == "mpz" and not isinstance(opts["transport"], dict):
        raise ValueError('compression "mpz" needs transport= (the manifest\'s MPZ1 fields).')
    if verbose:
        print("Opening firmware file %s..." % url)
    from . import identity, policy

    pol = opts["policy"] = policy.Policy(
        opts["version"],
        opts["allow_downgrade"],
        opts["backend"],
        opts["force"],
        opts["_micropython"],
        opts["_build"],
    )
    if verbose:
        print("Replacing %s." % identity.name(pol.running))
    note = pol.check_declared()
    if verbose and note:
        print(note)
    result = download.Download(url, sha, length, opts).run()
    pol.installed()
    if reboot:
        _reboot(10 if reboot is True else int(reboot))
    return result


load_json = manifest.load  # v0.3's name


def from_json(
    url,
    verify=True,
    verbose=True,
    reboot=True,
    pubkey=None,
    allow_downgrade=False,
    ca=None,
    force=False,
    **kw,
):
    """Install the image a JSON manifest at url names (see from_file() for the keywords).

    pubkey: the manifest's public key (PEM text or bytes, DER bytes); None: /ota_pubkey.pem at
    the filesystem's root if it exists. force=True installs a build this device rolled back from
    and skips the manifest's expiry and sequence and the version checks (never the signature).
    delta=False: never a patch ("patches", ota/delta.py), always the full image.
    manifest: the manifest already read from url (ota/fleet.py polls it): not fetched again,
    checked as one that is.
    """
    from . import trust

    if verbose:
        print("Opening json file %s..." % url)
    # One deadline for the manifest and the image.
    kw["_until"] = download.deadline(kw.pop("deadline", _DEADLINE))
    der = trust.key(pubkey)  # a configured key that cannot be used stops here
    m = kw.pop("manifest", None)
    if m is None:
        m = manifest.load(
            url, ca, kw.get("timeout", 30), kw.get("headers"), kw.get("auth"), kw.get("_until")
        )
    if not isinstance(m, dict) or not all(k in m for k in ("firmware", "sha", "length")):
        print('OTA json must include "firmware", "sha" and "length" keys.')
        raise ValueError('The manifest has no "firmware", "sha" and "length".')
    seq = trust.check(m, der, allow_downgrade, force, verbose)
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
    kw["_micropython"] = _text(m, "micropython")
    kw["_build"] = _text(m, "build")
    kw["allow_downgrade"] = allow_downgrade
    kw["force"] = force
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
    if seq is not None:  # the image is the boot partition: remember its sequence
        from . import history

        history.set_sequence(seq)
    if reboot:
        _reboot(10 if reboot is True else int(reboot))
    return result


# A manifest's text field, checked: None when absent.
def _text(m, k):
    v = m.get(k)
    if v is not None and (not isinstance(v, str) or not v or len(v) > 64):
        raise ValueError("The manifest's %r must be a short string, not %r." % (k, v))
    if k == "build" and v and (len(v) != 64 or [c for c in v if c not in "0123456789abcdef"]):
        raise ValueError('The manifest\'s "build" must be an app_elf_sha256 in hex, not %r.' % v)
    return v


# A file the manifest at url names: on the manifest's server (a path too, never a local file),
# or beside a local manifest.
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
