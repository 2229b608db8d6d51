"""The `_ota` module's own API, on the native runtimes: CPython with the C core through ctypes,
and (when $OTA_MICROPYTHON or $MICROPY_DIR gives one) the MicroPython unix port built with
usermod/ota_native, i.e. the real binding modota.c."""

import pytest
from conftest import RUNTIMES, Sim, image, sha256
from esp_idf_defs import AppDescription
from espsim import otadata
from mpota import images, simdev

OLD_DESC = AppDescription.from_bytes(image("v1.22.0", 1_400_000)[32:288])

NATIVE = [r for r in RUNTIMES if r.endswith("-native")]
V23 = image("v1.23.0", images.SEED_IMAGE_SIZE)
SMALL = image("v1.23.1", 150_032)


@pytest.fixture(params=NATIVE)
def nsim(request, tmp_path) -> Sim:
    if request.param == "cpython-native":
        request.getfixturevalue("native_lib")
    path = tmp_path / "flash.bin"
    simdev.create(path, image("v1.22.0", 1_400_000))
    (tmp_path / "v23.bin").write_bytes(V23)
    (tmp_path / "small.bin").write_bytes(SMALL)
    sim = Sim(path, request.param)
    sim.cwd = tmp_path
    return sim


INSTALL_SMALL = """
import _ota
u = _ota.Update()
u.write(open("small.bin", "rb").read())
u.finish(set_boot=True)
"""


def run(sim, code, ok=True):
    return sim.run(code, ok=ok, cwd=sim.cwd)


def test_partition_functions(nsim):
    r = run(
        nsim,
        """
import _ota
print(_ota.running(), _ota.boot(), _ota.next_update())
print(_ota.state("ota_0"), _ota.state("ota_1"), _ota.describe("ota_1"))
print(_ota.describe("ota_0"))
print(_ota.rollback_possible(), _ota.BUFFER_SIZE, _ota.PROGRESS_STEP)
try:
    _ota.state("nope")
except OSError as e:
    print("OSError", e.args[0])
try:
    _ota.set_boot("ota_1")
except OSError as e:
    print("OSError", e.args)
""",
    )
    assert r.stdout.splitlines() == [
        "ota_0 ota_0 ota_1",
        "2 None None",
        # a MicroPython build: empty version and project name (the version is in the banner)
        str(("", "", OLD_DESC.date, OLD_DESC.time, "v5.5.2")),
        "False 4096 65536",
        "OSError 2",
        "OSError (-5379, 'ESP_ERR_OTA_VALIDATE_FAILED')",
    ]


def test_update_write_finish(nsim):
    r = run(
        nsim,
        f"""
import _ota, binascii
u = _ota.Update(length={len(SMALL)})
print(u.partition, u.nbytes, len(u.head))
f = open("small.bin", "rb")
n = 0
while True:
    b = f.read(1000)
    if not b:
        break
    n += u.write(b if n % 2 else bytearray(b))
print(n, u.nbytes, binascii.hexlify(u.sha()).decode(), u.head[:1] == b"\\xe9", len(u.head))
u.finish(sha=binascii.unhexlify({sha256(SMALL)!r}), length={len(SMALL)}, set_boot=True)
print(_ota.boot(), _ota.state("ota_1"))
""",
    )
    assert r.stdout.splitlines() == [
        "ota_1 0 0",
        f"{len(SMALL)} {len(SMALL)} {sha256(SMALL)} True 288",
        "ota_1 0",
    ]
    assert nsim.region("ota_1")[: len(SMALL)] == SMALL
    nsim.power_on()
    assert nsim.running() == "ota_1"


def test_write_from_streams_and_progress(nsim):
    r = run(
        nsim,
        """
import _ota
calls = []
u = _ota.Update(progress=lambda n: calls.append(n))
f = open("v23.bin", "rb")
print(u.write_from(f, 100000), u.nbytes)
class Slow:
    # A Python object with readinto(): called with (part of) the session's own buffer.
    def __init__(self, f):
        self.f = f
        self.sizes = set()
    def readinto(self, b):
        self.sizes.add(len(b))
        return self.f.readinto(b)
s = Slow(f)
print(u.write_from(s), u.nbytes, sorted(s.sizes))
print(calls)
u.finish(set_boot=True)
""",
    )
    lines = r.stdout.splitlines()
    assert lines[0] == "100000 100000"
    # readinto() gets the free part of the session's 4 KB buffer: 2,400 bytes to complete the
    # piece that the first 100,000 bytes left open, then whole 4 KB pieces, then (after the last
    # 1,824 bytes) the rest of that piece, where the end of the file is read.
    tail = len(V23) % 4096
    assert (
        lines[1]
        == f"{len(V23) - 100000} {len(V23)} {sorted({4096 - 100000 % 4096, 4096, 4096 - tail})}"
    )
    calls = eval(lines[2])
    # At most once per 64 KB of data, and not much less often: 23 calls for 1.5 MB.
    assert calls[0] == 65536
    assert all(b - a >= 65536 for a, b in zip(calls, calls[1:], strict=False))
    assert len(calls) == len(V23) // 65536
    assert nsim.boot_slot() == "ota_1"


def test_errors_are_values_and_oserrors(nsim):
    r = run(
        nsim,
        """
import _ota
def attempt(fn):
    try:
        fn()
        print("no error")
    except Exception as e:
        print(type(e).__name__, e.args)
def write(data, **kw):
    u = _ota.Update()
    u.write(data)
    u.finish(**kw)
attempt(lambda: _ota.Update(length=2000000))
attempt(lambda: write(open("v23.bin", "rb").read(200)))
attempt(lambda: write(b"\\x00" * 500))
attempt(lambda: write(open("small.bin", "rb").read(), length=5))
attempt(lambda: write(open("small.bin", "rb").read(), sha=b"x" * 32))
attempt(lambda: write(open("small.bin", "rb").read(100000)))
u = _ota.Update()
u.abort()
attempt(lambda: u.write(b"\\xe9"))
""",
    )
    got = r.stdout.splitlines()
    assert got[0] == "ValueError ('length (2000000 bytes) is > size of partition.',)"
    assert got[1] == (
        "ValueError ('Not an ESP32 app image: only 200 bytes (an app image has at least 288).',)"
    )
    assert got[2] == (
        "ValueError ('Not an ESP32 app image: it starts with 0x00, not 0xe9 (use "
        "micropython.bin).',)"
    )
    assert got[3] == f"ValueError ('Receive {len(SMALL)} bytes (expect 5).',)"
    assert got[4] == (
        f"ValueError ('SHA mismatch recv={sha256(SMALL)} expect=" + "78" * 32 + ".',)"
    )
    assert got[5] == "OSError (-5379, 'ESP_ERR_OTA_VALIDATE_FAILED')"
    assert got[6] == "ValueError ('This OTA update was aborted.',)"
    assert nsim.boot_slot() == "ota_0"


def test_context_manager_and_failing_stream_abort(nsim):
    r = run(
        nsim,
        """
import _ota
class Broken:
    def __init__(self):
        self.f = open("v23.bin", "rb")
        self.n = 0
    def readinto(self, b):
        self.n += 1
        if self.n == 30:
            raise OSError(5, "link down")
        return self.f.readinto(b)
u = _ota.Update()
try:
    u.write_from(Broken())
except OSError as e:
    print("stream", e.args)
try:
    u.write(b"more")
except ValueError as e:
    print(e.args[0])
try:
    with _ota.Update() as u2:
        u2.write(open("small.bin", "rb").read(9000))
        raise KeyError("stop")
except KeyError:
    pass
try:
    u2.finish()
except ValueError as e:
    print(e.args[0])
""",
    )
    assert r.stdout.splitlines() == [
        "stream (5, 'link down')",
        "This OTA update was aborted.",
        "This OTA update was aborted.",
    ]
    assert nsim.boot_slot() == "ota_0"


def test_write_from_refuses_a_stream_that_misreports_its_count(nsim):
    # readinto() is given the object's 4 KB buffer; a count above that would have the core read
    # past it (and write what lies beyond to flash). Every impossible answer is the stream's
    # error: ValueError naming it, nothing of that read used, the update aborted.
    r = run(
        nsim,
        """
import _ota, binascii
class Liar:
    def __init__(self, answer):
        self.f = open("v23.bin", "rb")
        self.n = 0
        self.answer = answer
    def readinto(self, b):
        self.n += 1
        got = self.f.readinto(b)
        return self.answer if self.n == 4 else got
for answer in (8192, 4097, -1, 1 << 40, 4096.0, "4096", b"x"):
    u = _ota.Update()
    try:
        u.write_from(Liar(answer))
        print("no error")
    except Exception as e:
        print(type(e).__name__, e.args)
    print(u.nbytes, binascii.hexlify(u.sha()).decode(), _ota.flash_counts()[3])
    try:
        u.write(b"more")
    except ValueError as e:
        print(e.args[0])
""",
    )
    good = sha256(V23[: 3 * 4096])
    lines = r.stdout.splitlines()
    said = ["8192", "4097", "-1", "a huge int", "a float", "a str", "a bytes"]
    assert len(lines) == 3 * len(said), r.stdout
    programmed = 0
    for i, what in enumerate(said):
        error, state, closed = lines[3 * i : 3 * i + 3]
        assert error == (
            f"ValueError ('Stream error: readinto() returned {what} for a buffer of 4096 bytes.',)"
        )
        nbytes, digest, total = state.split()
        assert (nbytes, digest) == (str(3 * 4096), good)
        programmed += 3 * 4096  # the three honest reads, not a byte more
        assert int(total) == programmed
        assert closed == "This OTA update was aborted."
    assert nsim.boot_slot() == "ota_0"


def test_unfinished_updates_are_released_by_the_finaliser(nsim):
    # ESP-IDF keeps a handle per esp_ota_begin() until esp_ota_end/abort (the host backend has
    # room for 4). Updates dropped half way must give theirs back when collected.
    r = run(
        nsim,
        """
import _ota, gc
data = open("small.bin", "rb").read(5000)
for i in range(8):
    u = _ota.Update()
    u.write(data)
    u = None
    gc.collect()
u = _ota.Update()
u.write(open("small.bin", "rb").read())
u.finish(set_boot=True)
print(_ota.boot())
""",
    )
    assert r.stdout.strip() == "ota_1"


def test_pending_verify_needs_confirm(nsim, tmp_path):
    run(nsim, INSTALL_SMALL)
    nsim.power_on()
    assert nsim.running() == "ota_1" and nsim.state("ota_1") == otadata.PENDING_VERIFY
    before = nsim.flash()
    r = run(
        nsim,
        """
import _ota
u = _ota.Update()
try:
    u.write(open("v23.bin", "rb").read(8192))
except OSError as e:
    print(e.args)
print(_ota.state("ota_1"))
u = _ota.Update(confirm=True)
u.write(open("v23.bin", "rb").read())
u.finish(set_boot=True)
print(_ota.state("ota_1"), _ota.boot())
""",
    )
    assert r.stdout.splitlines() == [
        "(-5382, 'ESP_ERR_OTA_ROLLBACK_INVALID_STATE')",
        "1",
        "2 ota_0",
    ]
    assert before != nsim.flash()


def test_mark_invalid_and_reboot(nsim):
    run(nsim, INSTALL_SMALL)
    nsim.power_on()
    assert nsim.running() == "ota_1"
    r = run(nsim, "import _ota\n_ota.mark_invalid_and_reboot()\nprint('not reached')")
    assert "not reached" not in r.stdout and "esp_restart()" in nsim.out
    assert nsim.state("ota_1") == otadata.INVALID
    nsim.power_on()  # the simulator's bootloader skips the INVALID slot
    assert nsim.running() == "ota_0"


def test_simulator_written_update_is_accepted_by_the_host_backend(nsim):
    # The pure backend writes through the Python simulator; the C host backend reads it back.
    r = run(
        nsim,
        """
from ota.writer import OTA
import _ota
with open("small.bin", "rb") as f, OTA(backend="pure", verbose=False) as ota:
    ota.write_file(f)
print(_ota.boot(), _ota.state("ota_1"), _ota.describe("ota_1")[2:4])
_ota.set_boot("ota_1")
print(_ota.rollback_possible())
""",
    )
    small = AppDescription.from_bytes(SMALL[32:288])
    assert r.stdout.splitlines() == [f"ota_1 0 {(small.date, small.time)}", "True"]


@pytest.mark.parametrize("backend", ["native", "pure"])
def test_erases_for_the_seed_image(nsim, backend):
    r = run(
        nsim,
        f"""
import _ota, espsim.device
from ota.writer import OTA
with open("v23.bin", "rb") as f, OTA(verbose=False, backend={backend!r}) as ota:
    ota.write_file(f)
c = _ota.flash_counts()
p = espsim.device.current().flash.counts
print(c[0] + p["erase_4k"], c[1] + p["erase_64k"])
""",
    )
    # native: 24 x 64 KB (the image rounded up to blocks) + the otadata sector; pure with a
    # 64 KB buffer: 23 blocks, then one more for the last 18,208 bytes (cheaper than their
    # 5 sectors, 0xFF pages included) + otadata.
    assert r.stdout.split() == ["1", "24"]


READS = """
import _ota
from ota.writer import OTA
r0 = _ota.flash_counts()[5]
with open("v23.bin", "rb") as f, OTA(verbose=False, length={length}, verify={verify}) as ota:
    ota.write_file(f)
print(_ota.flash_counts()[5] - r0)
"""


def test_reads_of_the_seed_image(nsim):
    # Bytes read from flash by an update of the seed image through ota.writer: esp_ota_end()
    # and esp_ota_set_boot_partition() read the whole image once each (esp_image_verify());
    # verify=True adds only the image's header, segment headers and appended digest, which tie
    # esp_ota_end()'s check to the bytes received. Two image reads, not three.
    snapshot = nsim.flash()
    reads = {}
    for verify in (False, True):
        nsim.path.write_bytes(snapshot)
        reads[verify] = int(run(nsim, READS.format(length=len(V23), verify=verify)).stdout)
    print(f"seed image ({len(V23)} bytes), bytes read: {reads}")
    assert V23[23] == 1  # hash_appended
    assert reads[True] - reads[False] == 24 + 8 * V23[1] + 32
    assert reads[True] // len(V23) == 2
