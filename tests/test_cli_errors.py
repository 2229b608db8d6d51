"""The command line with bad inputs, as a user types them: `python -m mpota ...` in a directory
of input files. Each must end with one line on stderr naming what was wrong, a non-zero exit,
no traceback, and the directory exactly as it was (no new, half-written or changed file).
--debug and MPOTA_DEBUG=1 show the traceback. Every option's help says what it does and its
default; `mpota --version` prints the package's version."""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from espsim import parttable
from mpota import cli, images, manifest, simdev

GOOD = images.app_image("v1.24.0", size=300_000, build=1)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """The files the bad commands are given (and must leave as they are)."""
    d = tmp_path_factory.mktemp("inputs")
    (d / "good.bin").write_bytes(GOOD)
    (d / "s3.bin").write_bytes(images.app_image("v1.24.0", size=300_000, chip="esp32s3"))
    # An ESP32-C3 image needs chip revision v0.3 or later (images.CHIPS): v0.1 cannot boot it.
    (d / "c3.bin").write_bytes(images.app_image("v1.24.0", size=300_000, chip="esp32c3"))
    (d / "boot.bin").write_bytes(images.bootloader_image())
    (d / "firmware.bin").write_bytes(
        images.merged_firmware(GOOD, parttable.build(parttable.seed_table()))
    )
    (d / "random.bin").write_bytes(hashlib.sha256(b"x").digest() * 200)
    (d / "noapp.csv").write_text("nvs, data, nvs, 0x9000, 0x6000\n")
    (d / "bad.pem").write_text("-----BEGIN PRIVATE KEY-----\nbanana\n-----END PRIVATE KEY-----\n")
    manifest.keygen(d / "key.pem", d / "pub.pem")
    (d / "manifest.json").write_text('{"version": "1.0"}\n')
    (d / "list.json").write_text("[1, 2]\n")
    (d / "notjson.json").write_text("{version: 1\n")
    (d / "www").mkdir()
    simdev.create(d / "flash.bin", GOOD)
    return d


def snapshot(d: Path) -> dict:
    """Every file and directory under d (hidden ones too), with its content's hash."""
    out = {}
    for p in sorted(d.rglob("*")):
        out[str(p.relative_to(d))] = (
            hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
        )
    return out


def mpota(cwd, *args, env=None, timeout=120):
    e = dict(os.environ)
    e.pop("MPOTA_DEBUG", None)
    e.pop("OTA_MICROPYTHON", None)
    e.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mpota", *args],
        cwd=cwd,
        env=e,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# (arguments, strings the error line must hold: the bad file, option or value)
BAD = [
    # image
    (["image", "-o", "new/x.bin", "--size", "100"], ["--size", "100"]),
    (["image", "-o", "x.bin", "--size", "banana"], ["--size", "banana"]),
    (["image", "-o", "x.bin", "--version", "banana"], ["--version", "banana"]),
    (["image", "-o", "x.bin", "--chip", "esp8266"], ["--chip", "esp8266"]),
    (["image", "-o", "x.bin", "--date", "yesterday"], ["--date", "yesterday"]),
    (["image", "-o", "x.bin", "--merged", "--chip", "esp32c2"], ["--merged", "esp32c2"]),
    (["image", "-o", "x.bin", "--merged", "--size", "2100000"], ["--merged", "2100000"]),
    (["image", "-o", "x.bin", "--project-version", "x" * 40], ["--project-version", "31"]),
    (["image", "-o", "www"], ["www", "directory"]),
    # sim create
    (["sim", "create", "f.bin", "--firmware", "s3.bin"], ["s3.bin", "esp32s3"]),
    (["sim", "create", "flash.bin", "--firmware", "s3.bin"], ["s3.bin", "esp32s3"]),
    (["sim", "create", "f.bin", "--firmware", "random.bin"], ["random.bin", "app image"]),
    (["sim", "create", "f.bin", "--firmware", "boot.bin"], ["boot.bin", "bootloader"]),
    (["sim", "create", "f.bin", "--firmware", "firmware.bin"], ["firmware.bin", "merged"]),
    (["sim", "create", "f.bin", "--firmware", "missing.bin"], ["missing.bin", "no such"]),
    (
        [
            "sim",
            "create",
            "f.bin",
            "--chip",
            "esp32c3",
            "--chip-rev",
            "v0.1",
            "--firmware",
            "c3.bin",
        ],
        ["c3.bin", "does not boot", "v0.1"],
    ),
    (
        [
            "sim",
            "create",
            "flash.bin",
            "--chip",
            "esp32c3",
            "--chip-rev",
            "v0.1",
            "--firmware",
            "c3.bin",
        ],
        ["c3.bin", "does not boot"],
    ),
    (["sim", "create", "f.bin", "--flash-size", "1M"], ["--flash-size 1M", "ota_0"]),
    (["sim", "create", "f.bin", "--flash-size", "3M"], ["--flash-size", "3M"]),
    (["sim", "create", "f.bin", "--table", "random.bin"], ["--table", "random.bin"]),
    (["sim", "create", "f.bin", "--table", "noapp.csv"], ["noapp.csv", "app partition"]),
    (["sim", "create", "f.bin", "--chip", "esp32p4"], ["--chip", "esp32p4"]),
    (["sim", "create", "f.bin", "--version", "banana"], ["--version", "banana"]),
    (["sim", "create", "f.bin", "--fs", "random.bin"], ["--fs", "random.bin"]),
    (["sim", "create", "nodir/f.bin"], ["nodir", "no such"]),
    (["sim", "create", "www"], ["www", "directory"]),
    (["sim", "create", "www", "--blank"], ["www", "directory"]),
    (["sim", "create", "nodir/f.bin", "--blank"], ["nodir", "no such"]),
    (["sim", "create", "f.bin", "--blank", "--firmware", "good.bin"], ["--blank", "--firmware"]),
    (["sim", "create", "f.bin", "--blank", "--version", "v1.25.0"], ["--blank", "--version"]),
    (["sim", "create", "f.bin", "--blank", "--table", "noapp.csv"], ["--blank", "--table"]),
    (["sim", "create", "f.bin", "--blank", "--fs", "board"], ["--blank", "--fs board"]),
    (["sim", "create", "f.bin", "--blank", "--flash-size", "3M"], ["--flash-size", "3M"]),
    (["sim", "create", "f.bin", "--blank", "--chip", "esp8266"], ["--chip", "esp8266"]),
    # sim boot, run, info
    (["sim", "boot", "missing.bin"], ["missing.bin", "no such"]),
    (["sim", "boot", "random.bin"], ["random.bin", "not a flash image"]),
    (["sim", "run", "missing.bin", "-c", "print(1)"], ["missing.bin", "no such"]),
    (["sim", "run", "www", "-c", "print(1)"], ["www", "directory"]),
    (["sim", "run", "flash.bin", "missing.py"], ["missing.py", "no such"]),
    (["sim", "run", "flash.bin"], ["SCRIPT", "-c"]),
    (["sim", "run", "flash.bin", "x.py", "-c", "1"], ["SCRIPT", "-c"]),
    (["sim", "run", "flash.bin", "-c", "1", "--hosts", "garbage"], ["--hosts", "garbage"]),
    (["sim", "run", "flash.bin", "-c", "1", "--heap", "banana"], ["--heap", "banana"]),
    (["sim", "run", "flash.bin", "-c", "1", "--path", "nodir"], ["--path", "nodir"]),
    (["sim", "run", "flash.bin", "-c", "1", "--max-boots", "0"], ["--max-boots", "0"]),
    (["sim", "run", "flash.bin", "-c", "1", "--cut-after", "-1"], ["--cut-after", "-1"]),
    (["sim", "run", "flash.bin", "-c", "1", "--fs", "random.bin"], ["--fs", "random.bin"]),
    (
        ["sim", "run", "flash.bin", "-c", "1", "--runtime", "micropython-native"],
        ["OTA_MICROPYTHON"],
    ),
    (["sim", "info", "random.bin"], ["random.bin", "partition table"]),
    (["sim", "info", "missing.bin"], ["missing.bin", "no such"]),
    (["sim", "info", "good.bin"], ["good.bin", "partition table"]),
    # demo
    (["demo", "--dir", "random.bin"], ["--dir", "random.bin"]),
    # manifest
    (["manifest", "random.bin"], ["random.bin", "app image"]),
    (["manifest", "missing.bin"], ["missing.bin", "no such"]),
    (["manifest", "boot.bin"], ["boot.bin", "bootloader"]),
    (["manifest", "firmware.bin"], ["firmware.bin", "merged"]),
    (["manifest", "good.bin", "--url", "ftp://x/y"], ["--url", "ftp://x/y"]),
    (["manifest", "good.bin", "--url", "http:///y"], ["--url", "http:///y", "host"]),
    (["manifest", "good.bin", "--compress", "zlib", "--key", "bad.pem"], ["--key", "bad.pem"]),
    (["manifest", "good.bin", "--compress", "zlib", "--key", "pub.pem"], ["--key", "pub.pem"]),
    (["manifest", "good.bin", "--compress", "mpz", "--key", "nokey.pem"], ["--key", "nokey.pem"]),
    (["manifest", "good.bin", "--compress", "bzip2"], ["--compress", "bzip2"]),
    (["manifest", "good.bin", "--version", "banana"], ["--version", "banana"]),
    (["manifest", "good.bin", "--expires", "tomorrow"], ["--expires", "tomorrow"]),
    (["manifest", "good.bin", "--sequence", "-1"], ["--sequence", "-1"]),
    (["manifest", "good.bin", "--out-dir", "nodir"], ["--out-dir", "nodir"]),
    (["manifest", "good.bin", "--compress", "gzip", "-o", "nodir/m.json"], ["nodir"]),
    (["manifest", "good.bin", "--compress", "mpz", "--from", "random.bin"], ["--from", "random"]),
    (["manifest", "good.bin", "--compress", "zlib", "--from", "good.bin"], ["good.bin", "same"]),
    # keygen, sign
    (["keygen", "--private", "www", "--public", "p.pem"], ["www", "directory"]),
    (["keygen", "--private", "k.pem", "--public", "www"], ["www", "directory"]),
    (["keygen", "--private", "k.pem", "--public", "k.pem"], ["k.pem", "two files"]),
    (["sign", "missing.json", "--key", "key.pem"], ["missing.json", "no such"]),
    (["sign", "random.bin", "--key", "key.pem"], ["random.bin", "not"]),
    (["sign", "notjson.json", "--key", "key.pem"], ["notjson.json", "JSON"]),
    (["sign", "list.json", "--key", "key.pem"], ["list.json", "not a manifest"]),
    (["sign", "manifest.json", "--key", "bad.pem"], ["--key", "bad.pem"]),
    (["sign", "manifest.json", "--key", "nokey.pem"], ["--key", "nokey.pem"]),
    (["sign", "manifest.json", "--key", "key.pem", "-o", "nodir/m.json"], ["nodir"]),
    (["sign", "manifest.json"], ["--key"]),
    # serve
    (["serve", "missingdir"], ["missingdir", "no such"]),
    (["serve", "random.bin"], ["random.bin", "directory"]),
    (["serve", "www", "--port", "99999"], ["--port", "99999"]),
    (["serve", "www", "--port", "banana"], ["--port", "banana"]),
    (["serve", "www", "--bind", "no such host"], ["no such host"]),
    # inspect
    (["inspect", "random.bin"], ["random.bin", "not an image"]),
    (["inspect", "missing.bin"], ["missing.bin", "no such"]),
    (["inspect", "noapp.csv", "extra"], ["extra"]),
    # push
    (["push", "random.bin", "--port", "/dev/null"], ["random.bin", "app image"]),
    (["push", "missing.bin", "--port", "/dev/null"], ["missing.bin", "no such"]),
    (["push", "good.bin", "--port", "/nonexistent/tty"], ["--port", "/nonexistent/tty"]),
    (["push", "good.bin", "--port", "/dev/null", "--baud", "0"], ["--baud", "0"]),
    (["push", "good.bin", "--port", "/dev/null", "--baud", "fast"], ["--baud", "fast"]),
    (["push", "good.bin"], ["--port"]),
    # convert
    (["convert", "missing.bin", "-o", "x.bin"], ["missing.bin"]),
    (["convert", "random.bin", "-o", "x.bin"], ["random.bin"]),
    (["convert", "good.bin", "-o", "x.bin", "--flash-size", "banana"], ["--flash-size", "banana"]),
    (["convert", "good.bin", "-o", "x.bin", "--chip", "esp32"], ["--flash-size"]),
    (["convert"], ["FIRMWARE", "--port"]),
    (["convert", "good.bin"], ["-o"]),
    (["convert", "good.bin", "--port", "rfc2217://127.0.0.1:1"], ["--port", "FIRMWARE"]),
    (["convert", "--port", "rfc2217://127.0.0.1:1"], ["rfc2217://127.0.0.1:1", "open"]),
    (["convert", "--port", "/nonexistent/tty"], ["/nonexistent/tty"]),
    # no command, unknown command
    ([], ["cmd"]),
    (["frobnicate"], ["frobnicate"]),
]


@pytest.mark.parametrize("args, names", BAD, ids=[" ".join(a) or "(none)" for a, _ in BAD])
def test_bad_input_is_one_line_and_leaves_nothing(inputs, tmp_path, args, names):
    work = tmp_path / "work"
    shutil.copytree(inputs, work)
    before = snapshot(work)
    r = mpota(work, *args)
    assert r.returncode != 0, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("mpota"), r.stderr
    for name in names:
        assert name in lines[0], (name, r.stderr)
    assert snapshot(work) == before, "the command left the directory changed"


@pytest.mark.parametrize("how", [["--debug"], "MPOTA_DEBUG"])
def test_debug_shows_the_traceback(inputs, how):
    args = ["inspect", "random.bin"]
    if how == "MPOTA_DEBUG":
        r = mpota(inputs, *args, env={"MPOTA_DEBUG": "1"})
    else:
        r = mpota(inputs, *how, *args)
    assert r.returncode != 0
    assert "Traceback" in r.stderr and "not an image" in r.stderr, r.stderr


def test_good_inputs_still_work(inputs, tmp_path):
    """The same commands, given good inputs, write their files (and only those)."""
    work = tmp_path / "work"
    shutil.copytree(inputs, work)
    assert mpota(work, "image", "-o", "out/x.bin", "--size", "200000").returncode == 0
    assert (work / "out" / "x.bin").stat().st_size == 200000
    r = mpota(work, "manifest", "good.bin", "--compress", "zlib", "--key", "key.pem")
    assert r.returncode == 0, r.stderr
    assert (work / "good.bin.zz").exists() and "signed" in r.stdout
    r = mpota(work, "sim", "create", "new.bin", "--flash-size", "8M", "--firmware", "good.bin")
    assert r.returncode == 0, r.stderr
    assert (work / "new.bin").stat().st_size == 8 << 20 and (work / "new.bin.state").exists()
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_version():
    r = mpota(".", "--version")
    assert r.returncode == 0 and r.stdout.strip() == f"mpota {version('mpota')}", r


def _parsers(p: argparse.ArgumentParser, name="mpota"):
    yield name, p
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub, sp in action.choices.items():
                yield from _parsers(sp, f"{name} {sub}")


def test_every_option_says_what_it_does_and_its_default():
    seen = 0
    for name, p in _parsers(cli.parser()):
        for action in p._actions:
            if isinstance(action, argparse._HelpAction | argparse._VersionAction):
                continue
            if isinstance(action, argparse._SubParsersAction):
                continue
            what = f"{name} {'/'.join(action.option_strings) or action.dest}"
            assert action.help and len(action.help) > 10, f"{what}: no help"
            d = action.default
            if action.option_strings and d not in (None, False, [], argparse.SUPPRESS):
                assert "default" in action.help, f"{what}: the help does not give its default"
            seen += 1
    assert seen > 50


def test_help_explains_the_runtimes_and_the_chips(tmp_path):
    r = mpota(tmp_path, "sim", "run", "--help")
    assert r.returncode == 0
    for rt in simdev.RUNTIMES:
        assert f"\n  {rt} " in r.stdout, (rt, r.stdout)
    # image offers the ESP32-P4, which the simulator does not have: its help says so.
    r = mpota(tmp_path, "image", "--help")
    assert "esp32p4" in r.stdout and "no ESP32-P4" in " ".join(r.stdout.split())
