"""The device package's distribution files agree with its sources, and its code stays within
what MicroPython runs."""

import ast
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OTA = ROOT / "python" / "ota"


def test_package_json_lists_every_module():
    pkg = json.loads((ROOT / "package.json").read_text())
    files = sorted(p.name for p in OTA.glob("*.py"))
    assert pkg["urls"] == [[f"ota/{f}", f"python/ota/{f}"] for f in files]
    for _, src in pkg["urls"]:
        assert (ROOT / src).is_file()


def test_manifest_freezes_the_package_with_the_same_version():
    calls = []
    env = {
        "metadata": lambda **kw: calls.append(("metadata", kw)),
        "package": lambda name, **kw: calls.append(("package", name)),
    }
    exec((ROOT / "python" / "manifest.py").read_text(), env)
    version = json.loads((ROOT / "package.json").read_text())["version"]
    assert calls[0][0] == "metadata" and calls[0][1]["version"] == version
    assert ("package", "ota") in calls
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert re.search(rf'^version = "{re.escape(version)}"$', pyproject, re.M)


def test_device_code_uses_only_what_micropython_has():
    for path in OTA.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names]
                mod = getattr(node, "module", None) or ""
                assert not {"typing", "dataclasses", "abc", "enum"} & {mod, *names}, path
            if isinstance(node, ast.JoinedStr):
                raise AssertionError(f"{path.name}: f-string (keep device code %-formatted)")
            # Viper functions' annotations are the emitter's types (int, ptr8), not typing.
            viper = isinstance(node, ast.FunctionDef) and any(
                ast.unparse(d) == "micropython.viper" for d in node.decorator_list
            )
            if isinstance(node, ast.AnnAssign) or (
                isinstance(node, ast.FunctionDef)
                and not viper
                and (node.returns or any(a.annotation for a in node.args.args))
            ):
                raise AssertionError(f"{path.name}: annotations (no typing at runtime)")
