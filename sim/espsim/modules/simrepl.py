# The app side of the simulated board's serial port, in the process that plays the firmware
# (MicroPython's unix port). The PC (mpota/appconsole.py) speaks MicroPython's REPL protocol on
# the wire, as shared/runtime/pyexec.c does on a board, and hands this loop the code to run; the
# interpreter stays up between commands, so state persists as on a board, until a soft reset
# (the PC starts a new process) or machine.reset().
#
# Channels:
# - stdout (and stderr): what the code prints, as the board's UART carries it;
# - stdin: the bytes the PC receives on the wire while code runs (input(), sys.stdin);
# - cmd (PC -> here) and ctl (here -> PC): frames of one kind byte, a 4-byte little-endian
#   length and the payload.
#   cmd: b"B" boot: boot.py, then main.py when boot.py ended well and the payload is b"1"
#        (the friendly REPL), as ports/esp32/main.c does
#        b"S" run the payload as one friendly-REPL input, b"P" as a pasted block (paste mode),
#        b"X" as a raw-REPL program; b"D": give back what stdin still holds; b"Q": end.
#   ctl: b"R" ready (payload: the banner, "MicroPython <tag> on <date>; <machine>");
#        b"J" the code begins to run (a Ctrl-C may interrupt it from now on);
#        b"E" the code raised (payload: the exception as the board prints it, which the PC
#        puts on the wire: in the raw REPL after the end of the normal output);
#        b"F" done (b"0" ended, b"1" raised, b"S" SystemExit: a soft reset);
#        b"I" the stdin bytes left (answer to D); b"H" machine.reset() ran the bootloader
#        (payload: the exit status, b"3" when no app boots): this process ends.
#
# The board's filesystem, the littlefs in the simulated flash, is mounted at / as the port's
# _boot.py mounts it (simfs.py: formatted at first boot, fs_corrupted() when it is neither
# littlefs nor blank); the host paths the interpreter needs stay reachable through the same mount.

import sys

_me = '  File "%s"' % __file__


def _banner():
    import os

    u = os.uname()
    return "MicroPython %s; %s" % (u.version, u.machine)


class _Loop:
    def __init__(self, cmd_fd, ctl_fd):
        self.cmd = open("/dev/fd/%d" % cmd_fd, "rb")
        self.ctl = open("/dev/fd/%d" % ctl_fd, "wb")
        self.g = {"__name__": "__main__"}

    def send(self, kind, payload=b""):
        n = len(payload)
        self.ctl.write(bytes((kind, n & 255, n >> 8 & 255, n >> 16 & 255, n >> 24)) + payload)

    def _read(self, n):
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        while got < n:
            r = self.cmd.readinto(mv[got:])
            if not r:
                raise EOFError
            got += r
        return buf

    def recv(self):
        h = self._read(5)
        n = h[1] | h[2] << 8 | h[3] << 16 | h[4] << 24
        return h[0], bytes(self._read(n)) if n else b""

    def exc_text(self, e):
        # The exception as the board prints it, this loop's own frames left out.
        import io

        s = io.StringIO()
        sys.print_exception(e, s)
        return "\n".join(ln for ln in s.getvalue().split("\n") if not ln.startswith(_me))

    def run(self, src, name, mode):
        # b"0", b"1" or b"S", as pyexec's parse_compile_execute() ends.
        import machine

        try:
            code = compile(src, name, mode)
            self.send(ord("J"))  # from now on a Ctrl-C lands in the code
            exec(code, self.g)
            return b"0"
        except machine.HardReset:
            raise
        except SystemExit:
            return b"S"
        except BaseException as e:  # noqa: BLE001 - the board prints every exception
            self.send(ord("E"), self.exc_text(e).encode())
            return b"1"

    def run_file(self, name):
        # pyexec_file_if_exists(): a missing file runs as an empty one.
        try:
            f = open(name)
        except OSError:
            return b"0"
        with f:
            src = f.read()
        return self.run(src, name, "exec")

    def boot(self, friendly):
        r = self.run_file("boot.py")
        if r == b"0" and friendly:
            r = self.run_file("main.py")
        return r

    def drain(self):
        # One byte at a time: a stream's readinto() waits for its whole buffer.
        import select

        p = select.poll()
        p.register(sys.stdin, select.POLLIN)
        b = bytearray(1)
        out = bytearray()
        while p.poll(0) and sys.stdin.buffer.readinto(b):
            out += b
        self.send(ord("I"), bytes(out))

    def job(self, kind, data):
        if kind == ord("B"):
            return self.boot(data == b"1")
        src = str(data, "utf-8")
        if kind == ord("S"):
            return self.run(src, "<stdin>", "single")
        return self.run(src, "<stdin>", "exec")

    def serve(self):
        import machine

        while True:
            try:
                kind, data = self.recv()
            except KeyboardInterrupt:
                continue  # a Ctrl-C that came after the code it was meant for had ended
            except EOFError:
                return
            if kind == ord("Q"):
                return
            if kind == ord("D"):
                self.drain()
                continue
            r = b"1"
            try:
                r = self.job(kind, data)
            except machine.HardReset as e:
                self.send(ord("H"), str(e.args[0] if e.args else 0).encode())
                return
            except KeyboardInterrupt:
                pass  # while the exception of the code was being printed
            self.send(ord("F"), r)
            if r == b"S":
                return  # soft reset: the PC starts the firmware again


def main(cmd_fd, ctl_fd):
    import simfs

    loop = _Loop(cmd_fd, ctl_fd)
    banner = _banner()
    simfs.mount()
    loop.send(ord("R"), banner.encode())
    loop.serve()
