"""mpota convert --port URL: a live board made OTA-capable over its serial port, its files kept.

The steps, with esptool as a library (its flasher stub) on the board's ROM loader:

1. read the bootloader, the partition table, the app's image header (its length) and the
   flash id (the physical size); the layout is convert.layout()'s, as for a file;
2. read the filesystem (littlefs, MicroPython's geometry: blocks of 4 KB, read/prog 32,
   lookahead 32) block by block, only the blocks littlefs asks for, and back every file up on
   the PC (bytes and the mtime attribute MicroPython's VfsLfs2 keeps: type 1, 8 bytes, ns since
   1970, little endian), then build a littlefs image of exactly the new filesystem's blocks
   holding the same files; nothing is written before the backup and every new piece are on the
   PC, with a journal (BACKUP/journal.json, written last, through a rename);
3. write: erase nvs and otadata (0x9000-0xF000: nvs shrinks, so its contents are lost), the
   new filesystem, the bootloader when its header's flash size must grow, and the partition
   table last; check every region with the stub's MD5;
4. reset the board into its app and list its files back over the REPL (mpremote's transport),
   compared with the backup (names, sizes, SHA-256).

After a cut at any point (cable, power), the same command reads the journal and finishes the
job: every write is repeated whole, and the board's ROM loader does not depend on what the
flash holds, so no state of the flash stops a re-run. A board whose table is neither the one
backed up nor the new one is not touched.
"""

from __future__ import annotations

import hashlib
import json
import time
import zlib
from pathlib import Path

from esp_idf_defs import PartitionTable
from esp_idf_defs.partitions import InputError

from . import boardfs, convert, files
from .convert import APP_AT, TABLE_AT, TABLE_LEN, ConvertError

BLOCK = boardfs.BLOCK
LFS_GEOMETRY = boardfs.GEOMETRY  # MicroPython's VfsLfs2 defaults
LFS_DISK_VERSION = 0x00020000  # littlefs 2.0: every MicroPython's lfs2 mounts it
MTIME = boardfs.ATTR_MTIME  # 8 bytes, little endian, ns since 1970
NVS_SPAN = (0x9000, 0x6000)  # nvs and otadata of the new table; nvs of the stock ones
JOURNAL = "journal.json"
PHASES = ("planned", "written", "done")


class LiveError(RuntimeError):
    """The board or the line failed (exit 1): the journal lets a re-run finish."""


# -- the line -----------------------------------------------------------------------------------


def open_port(url: str):
    """The serial port `url` opened as esptool would, except that over RFC 2217 a change of
    the read timeout (esptool sets one around each command) is not renegotiated with the
    server: pyserial does so, polling every 50 ms for the answer, while the timeout is a
    local matter."""
    import serial
    from serial import rfc2217

    if not url.startswith("rfc2217://"):
        return serial.serial_for_url(url, exclusive=True)

    class Port(rfc2217.Serial):
        _line = None

        def _reconfigure_port(self):
            line = (self._baudrate, self._bytesize, self._parity, self._stopbits)
            if line != self._line:
                super()._reconfigure_port()
                self._line = line

    p = Port(None)
    p.port = url
    p.open()
    return p


class Board:
    """The board's ROM loader through esptool's stub: read, write, erase, MD5, reset."""

    def __init__(self, url: str, say, before: str = "default-reset"):
        self.url = url
        self.say = say
        self.before = before
        self.esp = None

    def connect(self) -> None:
        from esptool.cmds import attach_flash, detect_chip, detect_flash_size, run_stub
        from esptool.logger import log

        log.set_verbosity("silent")  # its steps are ours to tell; its errors are raised
        try:
            port = open_port(self.url)
        except Exception as e:  # noqa: BLE001 - pyserial's errors vary by URL kind
            raise LiveError(f"{self.url}: cannot open the port: {e}") from None
        try:
            esp = detect_chip(port, connect_mode=self.before, connect_attempts=3)
            esp = run_stub(esp)
            attach_flash(esp)
            size = detect_flash_size(esp)
        except Exception as e:  # noqa: BLE001 - esptool raises FatalError and serial errors
            port.close()
            raise LiveError(f"{self.url}: esptool: {_one_line(e)}") from None
        self.esp = esp
        self.chip = esp.CHIP_NAME.lower().replace("-", "")
        self.mac = ":".join(f"{b:02x}" for b in self._do("reading the MAC", esp.read_mac))
        if not size or not size.endswith("MB"):
            raise LiveError(f"{self.url}: the flash size is unknown (flash id {size})")
        self.flash_size = int(size[:-2]) << 20

    def _do(self, what, fn, *args):
        try:
            return fn(*args)
        except Exception as e:  # noqa: BLE001
            raise LiveError(f"{self.url}: {what}: {_one_line(e)}") from None

    def read(self, addr: int, n: int) -> bytes:
        return self._do(f"reading 0x{addr:x}+0x{n:x}", self.esp.read_flash, addr, n)

    def erase(self, addr: int, n: int) -> None:
        self._do(f"erasing 0x{addr:x}+0x{n:x}", self.esp.erase_region, addr, n)

    def write(self, addr: int, data: bytes) -> None:
        # FLASH_DEFL_BEGIN/DATA/END as `esptool write-flash` sends them (compressed).
        def go():
            esp = self.esp
            comp = zlib.compress(data, 9)
            blocks = esp.flash_defl_begin(len(data), len(comp), addr)
            for seq in range(blocks):
                block = comp[seq * esp.FLASH_WRITE_SIZE : (seq + 1) * esp.FLASH_WRITE_SIZE]
                esp.flash_defl_block(block, seq)
            esp.read_reg(esp.CHIP_DETECT_MAGIC_REG_ADDR)  # the last block written, as esptool

        self._do(f"writing 0x{addr:x}+0x{len(data):x}", go)

    def md5(self, addr: int, n: int) -> str:
        return self._do(f"MD5 of 0x{addr:x}+0x{n:x}", self.esp.flash_md5sum, addr, n)

    def reset_to_app(self) -> None:
        self._do("reset", self.esp.hard_reset)
        self.close()

    def close(self) -> None:
        if self.esp is not None:
            try:
                self.esp._port.close()
            except Exception:  # noqa: BLE001 - closing a dead line
                pass
            self.esp = None


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


# -- the filesystem -----------------------------------------------------------------------------


class _Remote:
    """A littlefs-python context reading the board's flash block by block, as littlefs asks;
    read-only. littlefs-python swallows an exception raised in a callback, so a failed read
    is kept in `error` (and zeros returned): check() raises it after each littlefs call."""

    def __init__(self, board: Board, start: int):
        self.board = board
        self.start = start
        self.cache = {}
        self.error = None

    def read(self, cfg, block, off, size):
        if block not in self.cache and self.error is None:
            try:
                self.cache[block] = self.board.read(self.start + block * BLOCK, BLOCK)
            except LiveError as e:
                self.error = e
        if self.error is not None:
            return bytearray(size)
        return bytearray(self.cache[block][off : off + size])

    def check(self) -> None:
        if self.error is not None:
            raise self.error

    def prog(self, cfg, block, off, data):
        raise OSError("read-only")

    def erase(self, cfg, block):
        raise OSError("read-only")

    def sync(self, cfg):
        return 0


def read_files(board: Board, start: int, size: int, say) -> list[dict] | None:
    """The files of the littlefs at `start` (`size` bytes), as [{path, data, mtime}] (mtime:
    the attribute's 8 bytes as hex, or None); None when the region is blank (the board formats
    it at its next boot). Raises ConvertError for anything else (FAT, damaged)."""
    import littlefs

    ctx = _Remote(board, start)
    head = ctx.read(None, 0, 0, BLOCK) + ctx.read(None, 1, 0, BLOCK)
    ctx.check()
    if head == b"\xff" * len(head):
        return None
    if head[510:512] == b"\x55\xaa" or head[54:57] == b"FAT" or head[82:85] == b"FAT":
        raise ConvertError(
            f"the filesystem at 0x{start:x} is FAT, not littlefs: copy its files off with "
            "mpremote (`mpremote cp -r : backup/`), then convert the board's image file"
        )
    fs = littlefs.LittleFS(ctx, mount=False, block_count=size // BLOCK, **LFS_GEOMETRY)
    try:
        fs.mount()
    except Exception as e:  # noqa: BLE001 - LittleFSError and friends
        ctx.check()  # the line failed, not the filesystem
        raise ConvertError(
            f"the filesystem at 0x{start:x} ({size // 1024} KB) is not a littlefs MicroPython "
            f"can mount ({_one_line(e)}): nothing written"
        ) from None
    ctx.check()
    try:
        out = _walk(fs, ctx)
    except ConvertError:
        raise
    except Exception as e:  # noqa: BLE001 - LittleFSError: a damaged filesystem
        ctx.check()
        raise ConvertError(
            f"the filesystem at 0x{start:x} is damaged ({_one_line(e)}): nothing written"
        ) from None
    ctx.check()
    say(
        f"read: {sum(1 for f in out if 'data' in f)} files, "
        f"{sum(len(f.get('data', b'')) for f in out)} bytes, in {len(ctx.cache)} blocks read"
    )
    return out


def _walk(fs, ctx: _Remote) -> list[dict]:
    out = []
    for top, dirs, names in fs.walk("/"):
        ctx.check()
        base = "/" + top.strip("/")
        for d in dirs:
            out.append({"path": _join(base, d), "dir": True})
        for n in names:
            p = _join(base, n)
            with fs.open(p, "rb") as f:
                data = f.read()
            try:
                mtime = fs.getattr(p, MTIME).hex()
            except Exception:  # noqa: BLE001 - LFS_ERR_NOATTR: a file without mtime
                mtime = None
            ctx.check()
            out.append({"path": p, "data": data, "mtime": mtime})
    return out


def _join(base: str, name: str) -> str:
    return (base.rstrip("/") + "/" + name) if base != "/" else "/" + name


def build_fs(entries: list[dict], size: int) -> bytes:
    """A littlefs image of `size` bytes (MicroPython's geometry) holding `entries`."""
    import littlefs

    n = size // BLOCK
    fs = littlefs.LittleFS(block_count=n, disk_version=LFS_DISK_VERSION, **LFS_GEOMETRY)
    try:
        for e in entries:
            if e.get("dir"):
                fs.makedirs(e["path"], exist_ok=True)
        for e in entries:
            if "data" in e:
                with fs.open(e["path"], "wb") as f:
                    f.write(e["data"])
                if e["mtime"] is not None:
                    fs.setattr(e["path"], MTIME, bytes.fromhex(e["mtime"]))
    except Exception as e:  # noqa: BLE001 - LFS_ERR_NOSPC
        total = sum(len(x.get("data", b"")) for x in entries)
        raise ConvertError(
            f"the files ({total} bytes) do not fit the new filesystem ({size // 1024} KB, "
            f"{n} blocks): {_one_line(e)}; a smaller --slot-size leaves more"
        ) from None
    return bytes(fs.context.buffer)


# -- the plan and the journal -------------------------------------------------------------------


def app_length(board: Board, chip: str) -> int:
    """The length of the app image at 0x10000 from its header and segment headers (esptool's
    image format), read a few bytes at a time; with the appended SHA-256."""
    head = board.read(APP_AT, 24)
    if head[0] != 0xE9:
        raise ConvertError(f"no app image at 0x{APP_AT:x} (first byte 0x{head[0]:02x})")
    count = head[1]
    if not 1 <= count <= 16:
        raise ConvertError(f"the app at 0x{APP_AT:x} has {count} segments: not an app image")
    pos = 24
    for _ in range(count):
        seg = board.read(APP_AT + pos, 8)
        length = int.from_bytes(seg[4:8], "little")
        if length > 16 << 20:
            raise ConvertError(f"the app at 0x{APP_AT:x}: a segment of {length} bytes")
        pos += 8 + length
    pos = (pos + 16) & ~15  # the checksum byte, padded to 16
    return pos + (32 if head[23] == 1 else 0)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def plan(board: Board, slot: int | None, say) -> dict:
    """Read the board and decide every write; nothing is written to the board."""
    chip = board.chip
    if chip not in convert.STOCK_APP and chip not in convert.CHIPS:
        raise ConvertError(f"{chip}: not a chip MicroPython builds for")
    table_bin = board.read(TABLE_AT, TABLE_LEN)
    try:
        stock = PartitionTable.from_binary(table_bin)
    except InputError as e:
        raise ConvertError(f"the partition table at 0x{TABLE_AT:x}: {e}") from None
    factory, fs_row, fs_entry = convert.stock_rows(stock)
    bl_at = convert.bootloader_offset(chip)
    bl = board.read(bl_at, TABLE_AT - bl_at)
    bl = bl[: convert._check_bootloader(chip, bl)]
    header = convert.header_flash_size(chip, bl)
    app_len = app_length(board, chip)
    if app_len > factory.size:
        raise ConvertError(f"the app ({app_len} bytes) overflows its factory partition")
    phys = board.flash_size
    if fs_row:
        old_fs = (fs_row.offset, fs_row.size)
    else:  # v1.26+: main.c registers "vfs" from the table's end to the end of flash
        end = stock.flash_size()
        old_fs = (end, phys - end)
    say(
        f"read: {chip}, {phys >> 20} MB flash (bootloader header {header >> 20} MB), app "
        f"{app_len} bytes in factory, filesystem 0x{old_fs[0]:x}-0x{sum(old_fs):x}"
    )
    lay = convert.layout(chip, app_len, phys, fs_entry, slot, True)
    fs_start = lay.fs_start
    new_size = phys - fs_start
    entries = read_files(board, old_fs[0], old_fs[1], say)
    if entries is None:
        say("read: the filesystem region is blank: the board formats one at its next boot")
        fs_image = b"\xff" * (2 * BLOCK)
    else:
        fs_image = build_fs(entries, new_size)
    pieces = [("nvs-otadata", NVS_SPAN[0], None, NVS_SPAN[1]), ("fs", fs_start, fs_image, None)]
    if lay.end > header:
        pieces.append(("bootloader", bl_at, convert.patch_flash_size(chip, bl, phys), None))
    pieces.append(("table", TABLE_AT, lay.table, None))
    return {
        "chip": chip,
        "mac": board.mac,
        "old_table": _sha(table_bin),
        "new_table": _sha(lay.table),
        "lines": lay.lines,
        "csv": lay.csv,
        "entries": entries,
        "pieces": pieces,
        "old_fs": old_fs,
        "new_fs": (fs_start, new_size),
        "old_table_bin": table_bin,
    }


def save(jdir: Path, p: dict) -> None:
    """The backup (files/), the pieces to write (pieces/) and, last, the journal."""
    jdir.mkdir(parents=True, exist_ok=True)
    listing = []
    for e in p["entries"] or []:
        rel = e["path"].lstrip("/")
        if e.get("dir"):
            (jdir / "files" / rel).mkdir(parents=True, exist_ok=True)
            listing.append({"path": e["path"], "dir": True})
            continue
        (jdir / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
        files.write(jdir / "files" / rel, e["data"])
        listing.append(
            {
                "path": e["path"],
                "size": len(e["data"]),
                "sha256": _sha(e["data"]),
                "mtime": e["mtime"],
            }  # fmt: skip
        )
    (jdir / "pieces").mkdir(exist_ok=True)
    files.write(jdir / "pieces" / "old-table.bin", p["old_table_bin"])
    plan_rows = []
    for name, addr, data, erase in p["pieces"]:
        row = {"name": name, "addr": addr}
        if data is None:
            row["erase"] = erase
        else:
            files.write(jdir / "pieces" / f"{name}.bin", data)
            row.update(size=len(data), sha256=_sha(data))
        plan_rows.append(row)
    files.write(jdir / "layout.csv", p["csv"])
    j = {
        "what": "mpota convert --port: the board's files and the writes that make it OTA-capable",
        "mac": p["mac"],
        "chip": p["chip"],
        "old_table": p["old_table"],
        "new_table": p["new_table"],
        "old_fs": p["old_fs"],
        "new_fs": p["new_fs"],
        "lines": p["lines"],
        "files": listing,
        "pieces": plan_rows,
        "phase": "planned",
        "time": int(time.time()),
    }
    write_journal(jdir, j)


def write_journal(jdir: Path, j: dict) -> None:
    files.write(jdir / JOURNAL, json.dumps(j, indent=1) + "\n")


def load_journal(jdir: Path) -> dict | None:
    path = jdir / JOURNAL
    if not path.exists():
        return None
    try:
        j = json.loads(path.read_text())
        if j.get("phase") not in PHASES or not isinstance(j.get("pieces"), list):
            raise ValueError("no phase or pieces")
    except ValueError as e:
        raise ConvertError(f"{path}: not a journal of mpota convert ({e})") from None
    for row in j["pieces"]:
        if "erase" not in row:
            data = (jdir / "pieces" / f"{row['name']}.bin").read_bytes()
            if _sha(data) != row["sha256"]:
                raise ConvertError(f"{jdir}/pieces/{row['name']}.bin: not what the journal says")
    return j


# -- writing ------------------------------------------------------------------------------------


def write_all(board: Board, jdir: Path, j: dict, say) -> None:
    """Every piece, in the journal's order (the table last), then every region checked."""
    for row in j["pieces"]:
        if "erase" in row:
            say(f"erase: {row['name']} 0x{row['addr']:x}-0x{row['addr'] + row['erase']:x}")
            board.erase(row["addr"], row["erase"])
        else:
            say(f"write: {row['name']} at 0x{row['addr']:x} ({row['size']} bytes)")
            board.write(row["addr"], (jdir / "pieces" / f"{row['name']}.bin").read_bytes())
    for row in j["pieces"]:
        if "erase" in row:
            want = hashlib.md5(b"\xff" * row["erase"]).hexdigest()
            n = row["erase"]
        else:
            want = hashlib.md5((jdir / "pieces" / f"{row['name']}.bin").read_bytes()).hexdigest()
            n = row["size"]
        got = board.md5(row["addr"], n)
        if got != want:
            raise LiveError(
                f"{row['name']} at 0x{row['addr']:x}: MD5 {got} on the board, {want} written; "
                "run the command again"
            )
    say(f"verified: {len(j['pieces'])} regions (MD5 of the board's flash)")


LIST = """
import os, hashlib, binascii
def _w(d):
    for e in os.ilistdir(d):
        p = (d if d != '/' else '') + '/' + e[0]
        if e[1] == 0x4000:
            print(repr((p, 'dir')))
            _w(p)
            continue
        h = hashlib.sha256()
        with open(p, 'rb') as f:
            while True:
                b = f.read(1024)
                if not b:
                    break
                h.update(b)
        print(repr((p, os.stat(p)[6], binascii.hexlify(h.digest()).decode())))
_w('/')
"""


def list_over_repl(url: str, timeout: float = 30) -> list[tuple]:
    """The board's files, listed by its app over the REPL (mpremote's transport)."""
    import ast

    from mpremote.transport import TransportError
    from mpremote.transport_serial import SerialTransport

    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        t = None
        try:
            t = SerialTransport(url, baudrate=115200)
            t.enter_raw_repl(soft_reset=False)
            out = t.exec(LIST)
            t.exit_raw_repl()
            rows = [ast.literal_eval(x) for x in out.decode().splitlines() if x.startswith("(")]
            return rows
        except (TransportError, OSError, ValueError, SyntaxError) as e:
            last = e
            time.sleep(0.5)
        finally:
            if t is not None:
                try:
                    t.close()
                except Exception:  # noqa: BLE001
                    pass
    raise LiveError(f"{url}: the app did not answer on the REPL: {_one_line(last)}")


def check_listing(rows: list[tuple], j: dict) -> list[str]:
    """What differs between the board's listing and the backup (empty: nothing)."""
    board = {r[0]: r[1:] for r in rows}
    diffs = []
    for f in j["files"]:
        got = board.get(f["path"])
        if f.get("dir"):
            if got != ("dir",):
                diffs.append(f"{f['path']}/: missing")
        elif got is None:
            diffs.append(f"{f['path']}: missing")
        elif got != (f["size"], f["sha256"]):
            diffs.append(f"{f['path']}: {got[0]} bytes on the board, {f['size']} backed up")
    return diffs


# -- the command --------------------------------------------------------------------------------


def default_backup(mac: str) -> Path:
    """~/.mpota/convert/MAC: found again whatever folder the command is run from."""
    return Path.home() / ".mpota" / "convert" / mac.replace(":", "")


def run(
    url: str,
    backup: str | None,
    yes: bool,
    slot: int | None,
    say,
    ask,
    before: str = "default-reset",
) -> int:
    """`mpota convert --port URL`. Returns the exit status; raises ConvertError (bad input:
    nothing written) or LiveError (the line or the board: run again). `before`: esptool's
    reset into the ROM loader (usb-reset: a USB-Serial-JTAG over RFC 2217, whose USB ids
    esptool cannot see)."""
    board = Board(url, say, before)
    say(f"connecting to {url} (esptool, {before} into the ROM loader)")
    board.connect()
    try:
        mac = board.mac
        jdir = Path(backup) if backup else default_backup(mac)
        j = load_journal(jdir)
        if j is not None and j["mac"] != mac:
            raise ConvertError(f"{jdir}: the journal of board {j['mac']}, not of this one ({mac})")
        say(f"board: {board.chip}, MAC {mac}, {board.flash_size >> 20} MB flash")
        if j is not None and j["phase"] != "done":
            now = _sha(board.read(TABLE_AT, TABLE_LEN))
            if now not in (j["old_table"], j["new_table"]):
                raise ConvertError(
                    f"the board's partition table is neither the one in {jdir} nor the new "
                    f"one: nothing written (move {jdir} away to start over)"
                )
            say(f"resuming the conversion in {jdir} (phase {j['phase']}): backup kept there")
        else:
            try:
                p = plan(board, slot, say)
            except ConvertError as e:
                if j is not None and "already has OTA slots" in str(e):  # stock_rows()
                    say(f"already converted: the backup and journal are in {jdir}")
                    return 0
                raise
            if j is not None:  # done, and the board is stock again: a new conversion
                old = jdir.with_name(f"{jdir.name}.{j['time']}")
                jdir.rename(old)
                say(f"the earlier conversion's backup moved to {old}")
            save(jdir, p)
            j = load_journal(jdir)
            say(f"backup: {len(j['files'])} entries in {jdir}/files, journal {jdir}/{JOURNAL}")
        for line in j["lines"]:
            say(line)
        lost = (
            "nvs (0x9000-0xF000) is erased: what esp32.NVS and Wi-Fi keep there is lost; "
            "the files are kept"
        )
        say("lost: " + lost)
        if j["phase"] == "planned":
            if not yes and not ask("Write the new layout to the board? [y/N] "):
                say(f"nothing written; the backup is in {jdir}")
                return 1
            write_all(board, jdir, j, say)
            j["phase"] = "written"
            write_journal(jdir, j)
        say("reset: the board boots ota_0")
        board.reset_to_app()
        rows = list_over_repl(url)
        diffs = check_listing(rows, j)
        for r in rows:
            say(f"  {r[0]}" + ("/" if r[1:] == ("dir",) else f"  {r[1]} bytes"))
        if diffs:
            raise LiveError(
                "the board's files differ from the backup: "
                + "; ".join(diffs[:5])
                + f" (the backup is in {jdir}/files)"
            )
        j["phase"] = "done"
        write_journal(jdir, j)
        say(f"done: {len(rows)} entries listed by the board match the backup in {jdir}")
        return 0
    finally:
        board.close()
