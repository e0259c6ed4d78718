"""The built package is complete: installed anywhere, it migrates from any working directory."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PIP = [sys.executable, "-m", "pip"]
OFFLINE = ["--quiet", "--no-deps", "--no-index"]
SHIPPED = ["pyproject.toml", "README.md", "bot", "cogs", "migrations"]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built offline from a copy of the sources, so nothing is written into the tree."""
    source = tmp_path_factory.mktemp("source")
    for name in SHIPPED:
        if (ROOT / name).is_dir():
            ignore = shutil.ignore_patterns("__pycache__")
            shutil.copytree(ROOT / name, source / name, ignore=ignore)
        else:
            shutil.copy(ROOT / name, source / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [*PIP, "wheel", *OFFLINE, "--no-build-isolation", "--wheel-dir", str(out), str(source)],
        check=True,
        capture_output=True,
    )
    (built,) = out.glob("*.whl")
    return built


def test_the_wheel_carries_every_module_and_the_migrations(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        shipped = set(archive.namelist())
    expected = {
        path.relative_to(ROOT).as_posix()
        for package in ("bot", "cogs")
        for path in (ROOT / package).rglob("*.py")
    }
    expected |= {
        "bot/" + path.relative_to(ROOT).as_posix()
        for path in (ROOT / "migrations").rglob("*")
        if path.suffix in {".py", ".mako"}
    }
    assert "bot/migrations/versions/0001_initial_schema.py" in expected
    assert expected <= shipped, sorted(expected - shipped)


def test_an_installed_copy_migrates_from_another_working_directory(
    wheel: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site"
    subprocess.run(
        [*PIP, "install", *OFFLINE, "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    database = tmp_path / "data" / "bot.db"
    env = {
        "PATH": os.environ.get("PATH", ""),
        # Before this environment's own site-packages: the installed copy, not the source tree.
        "PYTHONPATH": str(site),
        "DISCORD_TOKEN": "x",
        "ACEDATACLOUD_API_TOKEN": "x",
        "DATABASE_URL": f"sqlite:///{database}",
    }

    def python(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, *args], cwd=elsewhere, env=env, capture_output=True, text=True
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    said = python("-m", "bot", "migrate")
    with sqlite3.connect(database) as connection:
        (revision,) = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    assert f"is at revision {revision}." in said
    found = python("-c", "from bot.db.migrate import migrations_folder; print(migrations_folder())")
    assert found.strip() == str(site / "bot" / "migrations")
