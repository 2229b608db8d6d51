"""The simulated board on the wire: `mpota sim serial FLASH` serves the simulated ESP32 (the flash
file and its .state) as an RFC 2217 serial port on 127.0.0.1, so that the tools a user runs
against a board (esptool, mpremote, a terminal) run against it unmodified.

- DTR/RTS drive the chip's EN and IO0 as a board's USB-UART bridge does through its auto-reset
  transistor pair (`--usb uart`: EN is low while RTS alone is asserted, IO0 while DTR alone is),
  or as the USB-Serial-JTAG peripheral of the S3/C3/C5/C6 does (`--usb jtag`: DTR alone
  asserted sets the download flag, neither clears it, RTS alone resets the chip, into download
  mode when the flag is set). esptool's reset into the bootloader (ClassicReset, UnixTightReset,
  or with `--before usb-reset` USBJTAGSerialReset) starts the ROM loader; its hard reset (an RTS
  pulse with IO0 high) boots the app in flash with the simulator's bootloader.
- In download mode the chip answers esptool's protocol: espsim.romloader.
- When the app runs, the line belongs to an App (`on_boot`, `feed`, `on_reset`, writing through
  its `output`): the class here only shows what the board prints at boot; the MicroPython REPL
  plugs in there (the `app` argument of Board).
"""

from __future__ import annotations

import hashlib
import signal
import socket
import sys
import threading
from pathlib import Path

import serial.rfc2217 as rfc2217
from espsim import bootloader, chips, device
from espsim.romloader import Loader

from .simdev import RomDevice

USB_KINDS = ("uart", "jtag")
USB_JTAG_CHIPS = ("esp32s3", "esp32c3", "esp32c5", "esp32c6")  # SOC_USB_SERIAL_JTAG_SUPPORTED

# What each chip's ROM prints at reset (ESP32: "ets <ROM date>"; later chips: ESP-ROM and Build
# lines), then the reset cause and boot mode, as boards print them.
ROM_BANNER = {
    "esp32": "ets Jul 29 2019 12:21:46\r\n\r\n",
    "esp32s2": "ESP-ROM:esp32s2-rc4-20191025\r\nBuild:Oct 25 2019\r\n",
    "esp32s3": "ESP-ROM:esp32s3-20210327\r\nBuild:Mar 27 2021\r\n",
    "esp32c2": "ESP-ROM:esp8684-api2-20220127\r\nBuild:Jan 27 2022\r\n",
    "esp32c3": "ESP-ROM:esp32c3-api1-20210207\r\nBuild:Feb  7 2021\r\n",
    "esp32c5": "ESP-ROM:esp32c5-eco2-20250121\r\nBuild:Jan 21 2025\r\n",
    "esp32c6": "ESP-ROM:esp32c6-20220919\r\nBuild:Sep 19 2022\r\n",
}
BOOT_MODE = {  # (download, SPI flash boot), the strapping value and the ROM's name for it
    "esp32": ("0x3 (DOWNLOAD_BOOT(UART0/UART1/SDIO_REI_REO_V2))", "0x13 (SPI_FAST_FLASH_BOOT)"),
    "esp32s2": ("0x0 (DOWNLOAD(USB/UART0/1))", "0x8 (SPI_FAST_FLASH_BOOT)"),
    "esp32s3": ("0x0 (DOWNLOAD(USB/UART0))", "0x8 (SPI_FAST_FLASH_BOOT)"),
    "esp32c2": ("0x0 (DOWNLOAD(UART0))", "0x8 (SPI_FAST_FLASH_BOOT)"),
    "esp32c3": ("0x5 (DOWNLOAD(USB/UART0/1))", "0xc (SPI_FAST_FLASH_BOOT)"),
    "esp32c5": ("0x4 (DOWNLOAD(USB/UART0/SDIO_FEI_FEO))", "0xc (SPI_FAST_FLASH_BOOT)"),
    "esp32c6": ("0x4 (DOWNLOAD(USB/UART0/SDIO_FEI_FEO))", "0xc (SPI_FAST_FLASH_BOOT)"),
}


def rom_reset_text(chip: str, download: bool, usb_reset: bool) -> str:
    cause = (
        "0x1 (POWERON_RESET)"
        if chip == "esp32"
        else "0x15 (USB_UART_CHIP_RESET)"
        if usb_reset
        else "0x1 (POWERON)"
    )
    text = ROM_BANNER[chip] + f"rst:{cause},boot:{BOOT_MODE[chip][0 if download else 1]}\r\n"
    return text + ("waiting for download\r\n" if download else "")


def board_mac(path: str | Path, state: dict) -> bytes:
    """The chip's factory MAC: `mac=0x...` in the .state file, else one made from the flash
    file's path (Espressif's OUI 24:0A:C4, the rest from a hash), the same at every start."""
    if state.get("mac"):
        return int(state["mac"]).to_bytes(6, "big")
    h = hashlib.sha256(str(Path(path).resolve()).encode()).digest()
    return bytes([0x24, 0x0A, 0xC4]) + h[:3]


class App:
    """The app's side of the serial line while it runs. This one has nothing to run: the board
    has printed the boot log; bytes sent to the app are dropped. Another App (MicroPython's
    REPL) replaces it: Board(app=...) takes a callable (flash, output) -> App.

    on_boot(part, log)  the bootloader started `part` (espsim.parttable.Part); log: its lines
    feed(data)          bytes from the host
    on_reset()          the chip is reset or powered off: stop
    output(data)        (given) put bytes on the line to the host
    """

    def __init__(
        self,
        flash: str,
        output,
        runtime: str = "micropython",
        fs: str | None = None,
        ota: bool = True,
    ):
        self.flash = flash
        self.output = output
        self.runtime = runtime
        self.fs = fs
        self.ota = ota
        self.running = None

    def on_boot(self, part, log) -> None:
        self.running = part

    def feed(self, data: bytes) -> None:
        pass

    def on_reset(self) -> None:
        self.running = None


class ReplApp(App):
    """MicroPython's REPL on the line while the app runs (mpota.appconsole.AppConsole): the
    board's bootloader has run and printed its log; the app starts without running it again.
    The board's filesystem is the littlefs in its flash; `fs` (a directory, or None) mirrors
    it (mpota.appconsole.AppConsole; a missing `fs` is made from the board's). ota=False: the
    repository's `ota` package is not on the board's module path, as on a board where it was
    not installed."""

    def __init__(
        self,
        flash: str,
        output,
        runtime: str = "micropython",
        fs: str | None = None,
        ota: bool = True,
    ):
        from . import appconsole, boardfs

        super().__init__(flash, output, runtime, fs, ota)
        if runtime not in appconsole.RUNTIMES:
            raise ValueError(
                f"the REPL on the line runs under {' or '.join(appconsole.RUNTIMES)}, "
                f"not {runtime}"
            )
        if fs and not Path(fs).exists():
            Path(fs).mkdir(parents=True)
            try:
                boardfs.mirror_out(flash, fs)
            except boardfs.NoFilesystem:
                pass  # the board formats its filesystem at first boot
        self.con = appconsole.AppConsole(flash, self.fs, runtime=runtime, write=output, ota=ota)

    def on_boot(self, part, log) -> None:
        super().on_boot(part, log)
        self.con.boot(power_on=False)

    def feed(self, data: bytes) -> None:
        self.con.feed(data)

    def on_reset(self) -> None:
        super().on_reset()
        self.con.stop()


class Board:
    """The simulated board: its pins, its chip's modes (reset, ROM loader, app) and the line.
    output(bytes) sends to the host (None: nobody listens)."""

    # The straps: IO0 counts as low at boot when it was low at any moment between EN rising and
    # the lines settling (not moving for SETTLE seconds). On a board, a capacitor delays EN and
    # esptool's reset holds IO0 low 50 ms past EN's release; over RFC 2217 each line change is a
    # round trip of pyserial's (it polls for the answer every 50 ms), so the release of EN and
    # the fall of IO0 arrive that far apart.
    SETTLE = 0.2

    def __init__(self, flash, usb: str = "uart", app=None, say=None):
        self.flash = str(flash)
        st = device.read_state(self.flash)
        self.chip = chips.get(st["chip"]).name
        if usb not in USB_KINDS:
            raise ValueError(f"usb must be one of {', '.join(USB_KINDS)}, not {usb!r}")
        if usb == "jtag" and self.chip not in USB_JTAG_CHIPS:
            raise ValueError(
                f"{chips.get(self.chip).display} has no USB-Serial-JTAG: use --usb uart"
            )
        self.usb = usb
        self.mac = board_mac(self.flash, st)
        self.output = None
        self.say = say or (lambda msg: None)
        self.lock = threading.RLock()
        self.dtr = False
        self.rts = False
        self.baudrate = 115200
        self.mode = "off"  # off, reset, starting, rom, app
        self.loader = None
        self.app = (app or App)(self.flash, self._send)
        self.flag = False  # USB-Serial-JTAG download flag
        self.io0_seen = False  # IO0 was low since EN rose
        self.timer = None

    # -- the line --

    def _send(self, data: bytes) -> None:
        out = self.output
        if out is not None and data:
            out(data)

    def receive(self, data: bytes) -> None:
        with self.lock:
            if self.mode == "rom":
                self.loader.feed(data)
            elif self.mode == "app":
                self.app.feed(data)

    def set_lines(self, dtr: bool | None = None, rts: bool | None = None) -> None:
        with self.lock:
            before = (self.dtr, self.rts)
            if dtr is not None:
                self.dtr = bool(dtr)
            if rts is not None:
                self.rts = bool(rts)
            if (self.dtr, self.rts) != before or self.mode == "off":
                self._lines_changed()

    def power_on(self) -> None:
        with self.lock:
            self.mode = "off"
            self._lines_changed()

    def power_off(self) -> None:
        # the board is unplugged: the app (and its mirror of the filesystem) stops
        with self.lock:
            self._reset()
            self.mode = "off"

    def hang_up(self) -> None:
        # the host closed the port: a bridge drops DTR and RTS (HUPCL)
        self.set_lines(False, False)

    # -- reset circuit --

    def _lines_changed(self) -> None:
        if self.usb == "jtag":
            self._jtag()
            return
        en_low = self.rts and not self.dtr
        io0_low = self.dtr and not self.rts
        if en_low:
            if self.mode != "reset":
                self._reset()
        elif self.mode in ("reset", "off"):
            self.mode = "starting"  # EN rose: the chip starts once its straps are latched
            self.io0_seen = io0_low
            self._arm()
        elif self.mode == "starting":
            self.io0_seen |= io0_low
            self._arm()

    def _jtag(self) -> None:
        if self.mode == "off":
            self._start(False, False)
            return
        if self.dtr and not self.rts:
            self.flag = True
        elif not self.dtr and not self.rts:
            self.flag = False
        elif self.rts and not self.dtr:
            # the peripheral resets the chip; the ROM reads the flag
            self._reset()
            self._start(self.flag, True)

    def _arm(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
        self.timer = threading.Timer(self.SETTLE, self._settled)
        self.timer.daemon = True
        self.timer.start()

    def _settled(self) -> None:
        with self.lock:
            if self.mode == "starting" and not (self.rts and not self.dtr):
                self._start(self.io0_seen, False)

    def _reset(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.loader is not None:
            self.loader.close()
            self.loader = None
        if self.mode == "app":
            self.app.on_reset()
        self.mode = "reset"

    def _start(self, download: bool, usb_reset: bool) -> None:
        self._send(rom_reset_text(self.chip, download, usb_reset).encode())
        if download:
            st = device.read_state(self.flash)
            self.loader = Loader(
                self.flash,
                self.chip,
                st["chip_rev"],
                self.mac,
                self._send,
                self._rom_boots_flash,
                lambda: self.baudrate,
            )
            self.mode = "rom"
            self.say("download mode: the ROM loader waits for esptool")
        else:
            self._boot_app()

    def _rom_boots_flash(self) -> None:
        # FLASH_END / RUN_USER_CODE: the loader hands over to the code in flash
        self.loader.close()
        self.loader = None
        self._boot_app()

    def _boot_app(self) -> None:
        self.mode = "app"
        dev = RomDevice(self.flash)
        try:
            part, log = bootloader.boot(dev)
        except bootloader.Bricked as e:
            msg = str(e).split("\n")
            self._send(
                ("".join(f"E ({40 + i}) boot: {m}\r\n" for i, m in enumerate(msg))).encode()
            )
            self.say(f"the app does not boot: {msg[0]}")
            return
        finally:
            dev.close()
        text = "".join(f"I ({30 + 2 * i}) {line}\r\n" for i, line in enumerate(log))
        self._send(text.encode())
        self.say(f"booted '{part.label}' at 0x{part.address:x}")
        self.app.on_boot(part, log)


class FakeSerial:
    # What pyserial's rfc2217.PortManager drives: the port settings, DTR/RTS (to the board),
    # the modem inputs (none), the buffers (none to purge).
    def __init__(self, board: Board):
        self.board = board
        self.bytesize = 8
        self.parity = "N"
        self.stopbits = 1
        self.xonxoff = False
        self.rtscts = False
        self.break_condition = False
        self.cts = self.dsr = self.ri = self.cd = False

    @property
    def baudrate(self):
        return self.board.baudrate

    @baudrate.setter
    def baudrate(self, value):
        self.board.baudrate = int(value)

    @property
    def dtr(self):
        return self.board.dtr

    @dtr.setter
    def dtr(self, value):
        self.board.set_lines(dtr=value)

    @property
    def rts(self):
        return self.board.rts

    @rts.setter
    def rts(self, value):
        self.board.set_lines(rts=value)

    def setDTR(self, value=True):  # noqa: N802 (pyserial's names, as esptool calls them)
        self.dtr = value

    def setRTS(self, value=True):  # noqa: N802
        self.rts = value

    def reset_input_buffer(self):
        pass

    def reset_output_buffer(self):
        pass


class _Link:
    def __init__(self, conn):
        self.conn = conn
        self.lock = threading.Lock()

    def write(self, data: bytes) -> None:
        with self.lock:
            try:
                self.conn.sendall(data)
            except OSError:
                pass


class Server:
    """The board's serial port as an RFC 2217 server on 127.0.0.1:port (0: a free one), one
    client at a time, as a serial port has."""

    def __init__(self, board: Board, port: int = 0):
        self.board = board
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", port))
        self.sock.listen(1)
        self.port = self.sock.getsockname()[1]
        self.url = f"rfc2217://127.0.0.1:{self.port}"

    def serve_forever(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            self.handle(conn)

    def handle(self, conn) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(conn)
        pm = rfc2217.PortManager(FakeSerial(self.board), link)
        self.board.output = lambda data: link.write(b"".join(pm.escape(data)))
        try:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                data = b"".join(pm.filter(data))
                if data:
                    self.board.receive(data)
        finally:
            self.board.output = None
            self.board.hang_up()
            conn.close()


def serve(
    flash,
    port: int = 0,
    usb: str = "uart",
    runtime: str = "micropython",
    fs: str | None = None,
    app=None,
    out=None,
    ota: bool = True,
) -> int:
    """`mpota sim serial`: the URL first (a line of its own, flushed), then what the board does.
    app: the App class (default ReplApp: MicroPython's REPL), called as app(flash, output,
    runtime=..., fs=..., ota=...). ota=False: the repository's `ota` package is not on the
    board's module path (`mpota sim serial --no-ota`)."""
    out = out or sys.stdout
    app_class = app or ReplApp

    def say(msg: str) -> None:
        out.write(f"espsim: {msg}\n")
        out.flush()

    board = Board(
        flash, usb=usb, app=lambda f, o: app_class(f, o, runtime=runtime, fs=fs, ota=ota), say=say
    )
    server = Server(board, port)
    out.write(server.url + "\n")
    out.flush()
    board.power_on()

    def stop(signum, frame):
        raise KeyboardInterrupt

    try:
        signal.signal(signal.SIGTERM, stop)  # a kill, too, leaves --fs DIR the board's files
    except ValueError:
        pass  # not the main thread
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        board.power_off()
    return 0
