"""A short run of each fuzz target of tests/fuzz/ (libFuzzer, AddressSanitizer and
UndefinedBehaviorSanitizer): the delta applier, the image head check, a whole writing session.
Each runs its seeds (real images and detools patches made by tests/fuzz/make_seeds.py, and the
inputs kept in tests/fuzz/seeds/) and a fixed number of mutated inputs, and fails on any crash,
sanitizer report or broken invariant. `make fuzz` runs them for longer.

Built outside the checkout (a pytest temporary directory), so that tests running alongside see
it unchanged. Skipped when clang or its libFuzzer runtime is absent (Debian: clang
libclang-rt-14-dev), except under CI (CI=true), where that is a failure."""

import os
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

FUZZ = ROOT / "tests" / "fuzz"
# (target, mutated inputs): a few seconds each
TARGETS = [("delta", 3000), ("head", 20000), ("session", 300)]
REPORTS = ("ERROR: AddressSanitizer", "runtime error:", "invariant broken", "ERROR: libFuzzer")


def libfuzzer_missing(tmp) -> str | None:
    if not shutil.which("clang"):
        return "clang is not installed"
    src = tmp / "probe.c"
    src.write_text(
        "#include <stddef.h>\n#include <stdint.h>\n"
        "int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }\n"
    )
    r = subprocess.run(
        ["clang", "-fsanitize=fuzzer,address,undefined", "-o", str(tmp / "probe"), str(src)],
        capture_output=True, text=True,
    )  # fmt: skip
    return None if r.returncode == 0 else "clang has no libFuzzer runtime: " + r.stderr[-300:]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    why = libfuzzer_missing(tmp_path_factory.mktemp("probe"))
    if why:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{why} (CI must run the fuzz targets: add clang libclang-rt-14-dev)")
        pytest.skip(why)
    build = tmp_path_factory.mktemp("fuzz-build")
    r = subprocess.run(
        ["make", "-s", "-C", str(FUZZ), f"PYTHON={sys.executable}", f"BUILD={build}"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return build


def run(build, target, args, tmp_path, **env):
    corpus = tmp_path / "corpus"
    corpus.mkdir(exist_ok=True)
    (tmp_path / "work").mkdir(exist_ok=True)
    seeds = [str(build / "seeds" / target)]
    if (FUZZ / "seeds" / target).is_dir():
        seeds.append(str(FUZZ / "seeds" / target))
    return subprocess.run(
        [str(build / f"fuzz_{target}"), *args, f"-artifact_prefix={tmp_path}/", str(corpus),
         *seeds],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "FUZZ_FLASH": str(build / "flash.bin"),
             "FUZZ_WORK": str(tmp_path / "work"), "ASAN_OPTIONS": "detect_leaks=1",
             "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1", **env},
    )  # fmt: skip


@pytest.mark.parametrize("target,runs", TARGETS)
def test_fuzz_target(built, target, runs, tmp_path):
    r = run(built, target, [f"-runs={runs}", "-seed=1", "-max_total_time=60"], tmp_path)
    out = r.stdout + r.stderr
    print(out[-2000:])
    assert r.returncode == 0, out[-4000:]
    assert not [w for w in REPORTS if w in out], out[-4000:]
    assert f"Done {runs} runs" in out, out[-2000:]
    assert not list(tmp_path.glob("crash-*")), out[-2000:]


@pytest.mark.parametrize("what,report", [
    ("asan", "AddressSanitizer: heap-buffer-overflow"),
    ("ubsan", "runtime error: signed integer overflow"),
])  # fmt: skip
def test_sanitizers_catch_a_bad_access(built, what, report, tmp_path):
    """The targets are built with the sanitizers on, and a run stops on what they report:
    fuzz_head reads a byte past its input (or overflows an int) when asked to."""
    r = run(built, "head", ["-runs=10", "-seed=1"], tmp_path, FUZZ_SELFTEST=what)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and report in out, out[-3000:]
    assert list(tmp_path.glob("crash-*")), out[-2000:]
