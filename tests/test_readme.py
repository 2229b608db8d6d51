"""The README runs as written (issue 16): every shell and Python block of README.md carries a
marker on the line before it, and the runnable ones run in order, twice, as a user pasting them
into one terminal would: starting in the checkout, with a temporary home folder.

Markers (`<!-- readme: KIND ... -->`):
  shell            run with bash (-e) in the terminal's folder and environment, which carry on
                   to the next block; everything it started must have stopped when it ends
  file NAME        saved as NAME in the terminal's folder (a later shell block runs it)
  repl FLASH FS    a REPL session: its >>> lines run on the simulated board (mpota sim run
                   FLASH --fs FS -c), and print exactly the lines shown
  board / slow / ci (why)  not run here (a real board, minutes of work, or the command that
                   runs this suite): their commands and paths are checked to exist
  test FILE (why)  not run here: the test file FILE runs it as written (e.g. once per chip)

The only change made to a block: the port 8000 becomes a free one, so that a server already on
8000 does not fail the test. Afterwards, the checkout is as it was (git status)."""

import os
import re
import shlex
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import free_port
from espsim import otadata
from mpota import inspect

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
FENCE = re.compile(r"^<!-- readme: (\S+)(.*?)-->\n```(\w*)\n(.*?)^```$", re.M | re.S)
ANY_BLOCK = re.compile(r"^```(sh|py)\n", re.M)


def blocks() -> list[tuple[str, list[str], str, str, int]]:
    """(kind, args, language, body, line) of every marked block, in order."""
    text = (ROOT / "README.md").read_text()
    out = []
    for m in FENCE.finditer(text):
        args = m.group(2).split("(")[0].split()
        line = text.count("\n", 0, m.start(3)) + 1
        out.append((m.group(1), args, m.group(3), m.group(4), line))
    return out


def test_every_shell_and_python_block_is_marked():
    text = (ROOT / "README.md").read_text()
    marked = {line for _, _, _, _, line in blocks()}
    unmarked = [
        text.count("\n", 0, m.start()) + 1
        for m in ANY_BLOCK.finditer(text)
        if text.count("\n", 0, m.start()) + 1 not in marked
    ]
    assert unmarked == [], f"README.md blocks without a <!-- readme: ... --> marker: {unmarked}"
    kinds = {k for k, *_ in blocks()}
    assert kinds <= {"shell", "file", "repl", "board", "slow", "ci", "test"}, kinds


def test_the_marker_parser_sees_a_missing_marker(tmp_path):
    text = "<!-- readme: shell -->\n```sh\necho a\n```\n\n```py\nprint(1)\n```\n"
    assert len(list(FENCE.finditer(text))) == 1
    assert len(list(ANY_BLOCK.finditer(text))) == 2


# -- blocks not run here: what they name must exist -------------------------------------------


def makefile_targets() -> set[str]:
    return set(re.findall(r"^([a-z][\w-]*):", (ROOT / "Makefile").read_text(), re.M))


def mpota_commands() -> set[str]:
    return set(re.findall(r'add_parser\(\s*"([a-z-]+)"', (ROOT / "host/mpota/cli.py").read_text()))


def check_names(body: str, line: int) -> None:
    for cmd in body.replace("\\\n", " ").splitlines():
        words = shlex.split(cmd, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):  # VAR=value prefixes
            words = words[1:]
        if not words:
            continue
        tool = words[0]
        where = f"README.md line {line}: {cmd!r}"
        if tool == "make" and "-C" in words:  # another tree's Makefile
            continue
        if tool == "make":
            targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
            assert set(targets) <= makefile_targets(), where
        elif tool == "mpota":
            assert words[1] in mpota_commands(), where
        elif tool.startswith(".venv/bin/"):
            assert (ROOT / tool).name in {"python", "pytest", "mpota", "mpremote", "esptool"}
        elif tool == "cd":
            continue
        else:
            assert tool in {"mpremote", "esptool", "pytest"}, where
        for w in words[1:]:  # repository paths the command names
            if re.fullmatch(r"(bench|tests|python|host|sim|usermod)/[\w./-]*", w):
                assert (ROOT / w).exists(), where


@pytest.mark.parametrize(
    "kind,body,line",
    [(k, b, n) for k, _, _, b, n in blocks() if k in ("board", "slow", "ci")],
    ids=lambda x: str(x)[:30] if isinstance(x, str) else str(x),
)
def test_blocks_not_run_here_name_what_exists(kind, body, line):
    check_names(body, line)


def test_blocks_run_by_another_test_are_read_by_it():
    found = [args for kind, args, _, _, _ in blocks() if kind == "test"]
    assert found
    for args in found:
        test = ROOT / args[0]
        assert test.exists() and "README.md" in test.read_text(), args


# -- the runnable blocks, in order, twice ------------------------------------------------------


def alive(group: int, wait: float = 10) -> bool:
    """Whether a process of the group is still there after `wait` seconds (a server that was
    sent SIGTERM by the block takes a moment to exit)."""
    end = time.monotonic() + wait
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > end:
            return True
        time.sleep(0.05)


class Terminal:
    """One terminal: its folder and environment carry from block to block."""

    def __init__(self, home: Path, state: Path, port: int):
        self.cwd = ROOT
        self.state = state
        self.port = str(port)
        path = [p for p in os.environ["PATH"].split(os.pathsep) if Path(p) != VENV_BIN]
        self.env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
        self.env.update(HOME=str(home), PATH=os.pathsep.join(path))

    def shell(self, body: str, line: int) -> str:
        log = self.state / "out.txt"
        script = (
            "set -e -o pipefail\n"
            + body.replace("8000", self.port)
            + f'\npwd > "{self.state}/cwd"; env -0 > "{self.state}/env"\n'
        )
        with open(log, "w") as out:
            p = subprocess.Popen(
                ["bash", "-c", script],
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                rc = p.wait(timeout=600)
            finally:
                left = alive(p.pid)
                if left:
                    os.killpg(p.pid, signal.SIGKILL)
        text = log.read_text()
        assert rc == 0, f"README.md block at line {line} failed (exit {rc}):\n{text}"
        assert not left, f"README.md block at line {line} left processes running:\n{text}"
        self.cwd = Path((self.state / "cwd").read_text().strip())
        pairs = (self.state / "env").read_bytes().split(b"\0")
        self.env = dict(p.decode().split("=", 1) for p in pairs if b"=" in p)
        return text

    def file(self, name: str, body: str) -> None:
        (self.cwd / name).write_text(body.replace("8000", self.port))

    def repl(self, flash: str, fs: str, body: str, line: int) -> str:
        code = [ln[4:] for ln in body.splitlines() if ln.startswith((">>> ", "... "))]
        shown = [ln for ln in body.splitlines() if not ln.startswith((">>> ", "... "))]
        r = subprocess.run(
            ["mpota", "sim", "run", flash, "--fs", fs, "-c", "\n".join(code)],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.splitlines() == shown, (
            f"README.md line {line}: the REPL prints\n{r.stdout}\nbut the README shows\n"
            + "\n".join(shown)
        )
        return r.stdout


def git_status() -> str:
    return subprocess.run(
        ["git", "status", "--porcelain", "--ignored", "--untracked-files=all"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    ).stdout


TIMES: dict[int, list[float]] = {}  # seconds each shell block took, by line, in each run


def play(tmp: Path, port: int) -> dict[int, str]:
    """Every runnable block once, in order; the output of each shell and repl block by line."""
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    state = tmp / "state"
    state.mkdir(exist_ok=True)
    term = Terminal(home, state, port)
    out = {}
    for kind, args, _, body, line in blocks():
        if kind == "shell":
            t = time.monotonic()
            out[line] = term.shell(body, line)
            TIMES.setdefault(line, []).append(time.monotonic() - t)
        elif kind == "file":
            term.file(args[0], body)
        elif kind == "repl":
            out[line] = term.repl(args[0], args[1], body, line)
    return out


@pytest.fixture(scope="module")
def played(tmp_path_factory):
    if not (VENV_BIN / "activate").exists():
        pytest.skip("no .venv in the checkout (make setup creates it)")
    before = git_status()
    tmp = tmp_path_factory.mktemp("readme")
    port = free_port()
    runs = [play(tmp, port), play(tmp, port)]  # the same folder: a second run must work too
    slow = sorted(TIMES.items(), key=lambda kv: -sum(kv[1]))[:8]
    print("slowest README blocks (line: s per run):", "; ".join(
        f"{line}: {' + '.join(f'{t:.0f}' for t in ts)}" for line, ts in slow))  # fmt: skip
    assert git_status() == before, "the README's examples changed the checkout"
    return runs, tmp / "home" / "ota-try"


def output_of(runs, needle: str) -> list[str]:
    """The output of the shell block that contains `needle`, in each run."""
    for kind, _, _, body, line in blocks():
        if kind == "shell" and needle in body:
            return [r[line] for r in runs]
    raise AssertionError(f"no shell block with {needle!r}")


def test_the_readme_runs_twice_as_written(played):
    runs, work = played
    assert len(runs[0]) == len(runs[1]) > 5
    assert (work / "board.bin").exists()


def test_the_check_and_update_examples(played):
    runs, work = played
    for out in output_of(runs, "from_server.py"):
        assert "OTA Partition 'ota_1' updated successfully." in out, out
    for out in output_of(runs, "from_file.py"):
        assert "SHA256=fce96b2607bd9b248d5bce0a831bd67de883c328c947f21d1fd9f8ce35ce2ab1" in out
        assert "Writing 372 blocks + 1824 bytes." in out, out
    for out in output_of(runs, "update.py"):
        assert "espsim: running 'ota_1' at 0x190000" in out, out


def test_the_confirm_in_main_py_walkthrough(played):
    runs, work = played
    # The order of events: new firmware on trial, app fails, reset, rollback, confirmed.
    marks = [
        "espsim: running 'ota_1' at 0x190000",
        "main.py: the application did not start: no driver for the sensor",
        "main.py: ota_1 is on trial and not confirmed: reset",
        "otadata[1] was not confirmed: PENDING_VERIFY -> ABORTED",
        "espsim: running 'ota_0' at 0x10000",
        "app: started",
        "main.py: firmware confirmed",
    ]
    for out in output_of(runs, "cp main.py app.py confirm/"):
        at = 0
        for m in marks:
            at = out.find(m, at)
            assert at >= 0, f"{m!r} missing, or out of order:\n{out}"


def test_the_fleet_walkthrough(played):
    runs, work = played
    for out in output_of(runs, "mpota keygen"):
        assert "Manifest signature: valid." in out, out
        assert "espsim: running 'ota_1' at 0x190000" in out, out
        assert "ota_1      0x190000  MicroPython v1.25.0" in out, out
    flash = (work / "device.bin").read_bytes()
    ent = inspect.read_otadata(flash, inspect.read_table(flash))
    active = ent[otadata.active(ent)]
    assert (active.seq, active.state) == (2, otadata.VALID)  # ota_1, confirmed
    assert (work / "keys" / "signing.pem").stat().st_mode & 0o077 == 0  # the owner's only


def test_the_fleets_walkthrough(played):
    runs, work = played
    for out in output_of(runs, "mpota release nginx"):
        polls = [
            re.sub(r"127\.0\.0\.1:\d+", "127.0.0.1:PORT", re.sub(r"\+\w{8}:", "+REL:", line))
            for line in out.splitlines()
            if line.startswith("ota.fleet: ")
        ]
        assert polls == [
            "ota.fleet: http://127.0.0.1:PORT/stable/manifest.json 2.3.1+REL: wait",
            "ota.fleet: http://127.0.0.1:PORT/stable/manifest.json 2.3.1+REL: wait",
            "ota.fleet: http://127.0.0.1:PORT/beta/manifest.json 2.3.1+REL: install",
        ], out
        assert "espsim: running 'ota_1' at 0x190000" in out, out
        assert "release 2.3.1 build" in out, out
        log = [line.split('"') for line in out.splitlines() if '"GET ' in line]
        statuses = [(f[1].split()[1].split("/")[1], f[4].split()[0]) for f in log]
        # the field device: its manifest, then no news (304); the canary: manifest and image
        assert statuses == [
            ("stable", "200"),
            ("stable", "304"),
            ("beta", "200"),
            ("files", "200"),
        ]


def test_the_fleet_example(played):
    runs, work = played
    for out in output_of(runs, "mpota fleet watch"):
        halted = re.search(r"^HALTED trial release (2\.3\.1\+[0-9a-f]{8}): (.*)$", out, re.M)
        assert halted, out
        rel = halted.group(1)
        assert halted.group(2) == "stage 1: 2 of 2 devices failed (100.0 % >= 2 %)", out
        table = [line.split()[:5] for line in out.splitlines() if line.startswith("240ac4")]
        assert table == [
            ["240ac4000101", table[0][1], "failure", rel, "integrity"],
            ["240ac4000102", table[0][1], "failure", rel, "integrity"],
            ["240ac4000103", table[0][1], "downloading", rel, "-"],
            ["240ac4000104", table[0][1], "downloading", rel, "-"],
            ["240ac4000105", table[0][1], "downloading", rel, "-"],
        ], out
        resumed = [line for line in out.splitlines() if line.startswith("trial: release")]
        assert resumed == [resumed[0]] and resumed[0].endswith(", live"), out
    assert "<svg" in (work / "rollout.html").read_text()
