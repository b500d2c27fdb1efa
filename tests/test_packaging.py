"""What the wheel ships (issue 8 item 1): the library, its migrations and the user's testing
helpers; not the reliability harness (test equipment in ``tests/harness``), and no
``hypothesis`` among the requirements of an ordinary install.

The wheel is built once for the module with ``pip wheel --no-build-isolation`` (the
``setuptools`` of the ``dev`` extra, no download) from a clean copy of the checkout, so that a
stale ``build/`` directory cannot hide or add a file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: Never copied into the build: caches, virtualenvs, earlier builds, databases.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".*_cache", ".hypothesis", "*.db", "*.db-*", "*.spool")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[zipfile.ZipFile]:
    """The wheel ``pip wheel .`` builds from this checkout, opened."""
    tmp = tmp_path_factory.mktemp("wheel")
    source = tmp / "src"
    shutil.copytree(ROOT, source, ignore=NOT_SOURCE)
    out = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (path,) = out.glob("runapi_ledger-*.whl")
    with zipfile.ZipFile(path) as zf:
        yield zf


def _metadata(wheel: zipfile.ZipFile) -> str:
    (name,) = [n for n in wheel.namelist() if n.endswith(".dist-info/METADATA")]
    return wheel.read(name).decode()


def _requires(wheel: zipfile.ZipFile) -> list[tuple[str, str]]:
    """(requirement, marker) of every ``Requires-Dist`` line."""
    out = []
    for line in _metadata(wheel).splitlines():
        if line.startswith("Requires-Dist:"):
            req, _, marker = line.removeprefix("Requires-Dist:").partition(";")
            out.append((req.strip(), marker.strip()))
    return out


class TestTheWheelShipsTheLibraryOnly:
    def test_no_reliability_harness_file_is_in_the_wheel(self, wheel: zipfile.ZipFile) -> None:
        """Issue 8 item 1: no harness module (reliability, suites, tests/) ships."""
        names = wheel.namelist()
        assert [n for n in names if "reliability" in n or "harness" in n] == []
        assert [n for n in names if n.startswith("tests/") or "/tests/" in n] == []
        testing = sorted(n for n in names if n.startswith("ledger/testing/"))
        assert testing == ["ledger/testing/__init__.py", "ledger/testing/simulator.py"]

    def test_no_shipped_module_imports_the_test_tree_or_hypothesis(
            self, wheel: zipfile.ZipFile) -> None:
        """Issue 8 item 1: the installed library never reaches for tests.* or hypothesis."""
        bad = re.compile(rb"^\s*(from|import)\s+(tests|hypothesis)\b", re.MULTILINE)
        sources = [n for n in wheel.namelist() if n.endswith(".py")]
        assert len(sources) > 20  # the library itself is there
        assert [n for n in sources if bad.search(wheel.read(n))] == []

    def test_the_migrations_ship_in_the_wheel(self, wheel: zipfile.ZipFile) -> None:
        """Issue 8 item 1: an installed ledger can still migrate its own database."""
        names = set(wheel.namelist())
        assert any(re.fullmatch(r"ledger/migrations/versions/0001_\w+\.py", n) for n in names)
        for needed in ("ledger/migrations/env.py", "ledger/migrations/script.py.mako",
                       "ledger/py.typed"):
            assert needed in names, needed

    def test_every_module_of_the_package_ships(self, wheel: zipfile.ZipFile) -> None:
        """Issue 12: a subpackage missing from pyproject's list (ledger/metering/ once) fails here."""
        names = set(wheel.namelist())
        sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "ledger").rglob("*.py")}
        migrations = {"ledger/migrations/" + p.relative_to(ROOT / "migrations").as_posix()
                      for p in (ROOT / "migrations").rglob("*.py")}
        assert sorted(sources - names) == []
        assert sorted(migrations - names) == []

    def test_the_proxy_dashboard_assets_ship(self, wheel: zipfile.ZipFile) -> None:
        """Issue 13: the dashboard's HTML, CSS and JS are served from the installed package."""
        names = set(wheel.namelist())
        assets = {"ledger/proxy/static/" + p.name
                  for p in (ROOT / "ledger" / "proxy" / "static").iterdir()}
        assert len(assets) >= 4 and sorted(assets - names) == []


class TestTheWheelsRequirements:
    def test_the_proxy_stack_is_the_proxy_extra(self, wheel: zipfile.ZipFile) -> None:
        """Issue 13: starlette, uvicorn and prometheus_client come with [proxy], not always."""
        requires = _requires(wheel)
        for name in ("starlette", "uvicorn", "prometheus_client"):
            found = [m for r, m in requires if re.match(rf"{name}\b", r, re.IGNORECASE)]
            assert any(re.search(r"""extra\s*==\s*["']proxy["']""", m) for m in found), name
            assert all(m for m in found), f"{name} must not be an install requirement"

    def test_hypothesis_is_not_required_by_an_ordinary_install(
            self, wheel: zipfile.ZipFile) -> None:
        """Issue 8 item 1: hypothesis is a dev extra only, never an install requirement."""
        requires = _requires(wheel)
        assert any(req.startswith("sqlalchemy") and not marker for req, marker in requires)
        hypothesis = [(req, marker) for req, marker in requires
                      if re.match(r"hypothesis\b", req, re.IGNORECASE)]
        assert hypothesis, "hypothesis should still be listed under the dev extra"
        assert all(re.search(r"""extra\s*==\s*["']dev["']""", marker)
                   for _, marker in hypothesis), hypothesis
