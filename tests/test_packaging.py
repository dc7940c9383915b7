"""The sdist and the wheel: built offline, as ``python -m build --no-isolation`` would.

The source tree is copied first, so the build writes nothing beside the code; the
wheel is built from the unpacked sdist, which shows the sdist is complete.
"""

from __future__ import annotations

import email.parser
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest

import anyio_smtp
from tests.tools import need

ROOT = Path(__file__).resolve().parent.parent
VERSION = anyio_smtp.__version__
REPOSITORY = "https://github.com/anyio-smtp/anyio_smtp"
URLS = {
    "Homepage": REPOSITORY,
    "Documentation": f"{REPOSITORY}#readme",
    "Source": REPOSITORY,
    "Issues": f"{REPOSITORY}/issues",
    "Changelog": f"{REPOSITORY}/blob/main/CHANGELOG.md",
}
_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "__pycache__",
    "*.egg-info",
    "build",
    "dist",
    ".*_cache",
    ".hypothesis",
)


def _build(hook: str, source: Path, out: Path) -> Path:
    """Run a PEP 517 hook of setuptools in ``source``; return the file it made."""
    code = f"import sys\nfrom setuptools import build_meta\nprint(build_meta.{hook}(sys.argv[1]))\n"
    done = subprocess.run(
        [sys.executable, "-c", code, str(out)],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out / done.stdout.strip().splitlines()[-1]


def _metadata(text: str) -> Message:
    return email.parser.Parser().parsestr(text)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    need("setuptools", minversion="77")
    base = tmp_path_factory.mktemp("packaging")
    tree = base / "tree"
    shutil.copytree(ROOT, tree, ignore=_NOT_SOURCE)
    out = base / "dist"
    out.mkdir()
    sdist = _build("build_sdist", tree, out)
    with tarfile.open(sdist) as archive:
        archive.extractall(base / "unpacked", filter="data")
    wheel = _build("build_wheel", base / "unpacked" / f"anyio_smtp-{VERSION}", out)
    return sdist, wheel


def _check_metadata(metadata: Message) -> None:
    assert metadata["Name"] == "anyio_smtp"
    assert metadata["Version"] == VERSION
    assert metadata["License-Expression"] == "MIT"
    urls = dict(entry.split(", ", 1) for entry in metadata.get_all("Project-URL", []))
    assert urls == URLS
    # The tools CI pins are not what users install with an extra.
    requirements = [r.split(";")[0].strip() for r in metadata.get_all("Requires-Dist", [])]
    assert not [r for r in requirements if r.startswith(("mypy", "pyright", "ruff")) or "==" in r]


def test_the_sdist_holds_the_licence_the_examples_and_the_tests(built: tuple[Path, Path]) -> None:
    sdist, _ = built
    assert sdist.name == f"anyio_smtp-{VERSION}.tar.gz"
    top = f"anyio_smtp-{VERSION}/"
    with tarfile.open(sdist) as archive:
        names = {name.removeprefix(top) for name in archive.getnames()}
        pkg_info = archive.extractfile(top + "PKG-INFO")
        assert pkg_info is not None
        metadata = _metadata(pkg_info.read().decode("utf-8"))
    for required in (
        "LICENSE",
        "README.md",
        "pyproject.toml",
        "anyio_smtp/__init__.py",
        "anyio_smtp/py.typed",
        "examples/_embedded.py",
        "examples/starttls_send.py",
        "examples/implicit_tls_send.py",
        "examples/trio_send.py",
        "tests/conftest.py",
        "tests/test_examples.py",
        "tests/typing/check_surface.py",
    ):
        assert required in names
    assert not [name for name in names if "__pycache__" in name or name.endswith(".pyc")]
    _check_metadata(metadata)


def test_the_wheel_holds_the_package_the_licence_and_the_metadata(
    built: tuple[Path, Path],
) -> None:
    _, wheel = built
    assert wheel.name == f"anyio_smtp-{VERSION}-py3-none-any.whl"
    info = f"anyio_smtp-{VERSION}.dist-info"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        metadata = _metadata(archive.read(f"{info}/METADATA").decode("utf-8"))
        licence = archive.read(f"{info}/licenses/LICENSE").decode("utf-8")
    assert "anyio_smtp/py.typed" in names
    assert "anyio_smtp/auth/__init__.py" in names
    assert "anyio_smtp/testing/__init__.py" in names
    assert {name.split("/")[0] for name in names} == {"anyio_smtp", info}
    assert licence.startswith("MIT License")
    assert "anyio_smtp maintainers" in licence
    assert licence == (ROOT / "LICENSE").read_text(encoding="utf-8")
    _check_metadata(metadata)
