"""The runtimes beyond Python and Node.js as `lambdad doctor` reports them.

The per-language black-box tests are in test_lang_ruby.py, test_lang_java.py,
test_lang_dotnet.py and test_lang_go.py (shared checks in lang_support.py).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from lambdad.runtime import toolchains
from tests.conftest import ROOT, Server
from tests.e2e.lang_support import listed_runtimes

pytestmark = pytest.mark.toolchain


def expected_runtimes() -> dict[str, tuple[str, str | None]]:
    """runtime -> (family, executable) for what this host has installed (and built)."""
    expected: dict[str, tuple[str, str | None]] = {
        "provided.al2": ("provided", None),
        "provided.al2023": ("provided", None),
        "go1.x": ("go", None),
    }
    ruby = shutil.which("ruby")
    if ruby:
        expected.update({f"ruby3.{minor}": ("ruby", ruby) for minor in (2, 3, 4)})
    java = shutil.which("java")
    if java and toolchains.java_ready():
        expected.update({"java17": ("java", java), "java21": ("java", java)})
    mono = shutil.which("mono")
    if mono and toolchains.dotnet_ready():
        expected["dotnet8"] = ("dotnet", mono)
    return expected


def test_status_lists_the_language_runtimes(server: Server) -> None:
    listed = listed_runtimes(server)
    for runtime, (family, executable) in expected_runtimes().items():
        assert runtime in listed, f"{runtime} missing from {sorted(listed)}"
        assert listed[runtime]["family"] == family
        assert listed[runtime]["executable"] == executable
    # AWS's retired names are never offered
    for retired in ("java8", "java11", "ruby2.7", "dotnet6", "dotnetcore3.1", "provided"):
        assert retired not in listed


def test_doctor_shows_them(server: Server) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "lambdad.cli.main", "doctor"],
        env=server.cli_env(),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    for runtime in expected_runtimes():
        assert runtime in result.stdout
