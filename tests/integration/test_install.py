"""The wheel a user installs (pip / pipx): built from the source tree, installed into a fresh
venv with nothing else, it runs and carries its license and data files."""

from __future__ import annotations

import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from sentinel_backup import __version__

ROOT = Path(__file__).resolve().parents[2]


def run(*args: str | Path, cwd: Path | None = None) -> str:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, check=False, timeout=900)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-3000:]}{proc.stderr[-3000:]}"
    return proc.stdout


def test_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    source = tmp_path / "source"  # a copy of the tracked files: the build leaves nothing in the repository
    for name in run("git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT).split("\0"):
        if name and (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((ROOT / name).read_bytes())
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", "-w", dist, source)
    [wheel] = dist.glob("sentinel_backup-*.whl")
    assert wheel.name.startswith(f"sentinel_backup-{__version__}-py3-none-any")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"sentinel_backup-{__version__}.dist-info/METADATA").decode()
    assert f"sentinel_backup-{__version__}.dist-info/licenses/LICENSE" in names
    assert "sentinel_backup/py.typed" in names and "sentinel_backup/demo/sample.sql" in names
    assert not [n for n in names if n.startswith("tests/")]
    assert "License-Expression: MIT" in metadata and "Requires-Python: >=3.11" in metadata
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in declared if "==" in d]  # ranges; the exact pins live in constraints.txt

    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
        "-c", ROOT / "constraints.txt", wheel)
    run(venv / "bin" / "python", "-m", "pip", "check")
    assert run(venv / "bin" / "sentinel-backup", "--version", cwd=tmp_path).startswith(
        f"sentinel-backup {__version__} (Python ")
    assert "restore" in run(venv / "bin" / "sentinel-backup", "--help", cwd=tmp_path)
    license_text = (ROOT / "LICENSE").read_text()
    assert license_text.startswith("MIT License")


def test_compose_example_uses_known_settings_and_matching_client_tools() -> None:
    """contrib/docker-compose.yml cannot run here (no Docker engine): its variables must at
    least be settings the tool knows, and its client tools the server's major version."""
    from sentinel_backup import config_docs

    known = {variable for name in config_docs.Settings.model_fields for variable in config_docs.variables(name)}
    compose = (ROOT / "contrib" / "docker-compose.yml").read_text()
    block = compose.split("    environment:\n", 1)[1].split("    volumes:", 1)[0]
    names = [line.split(":", 1)[0].strip() for line in block.splitlines() if line.strip()]
    assert names and set(names) <= known, set(names) - known
    env_example = (ROOT / "contrib" / "sentinel.env.example").read_text()
    variables = [line.split("=", 1)[0] for line in env_example.splitlines() if line and not line.startswith("#")]
    assert set(variables) <= known
    server = compose.split("image: postgres:", 1)[1].split()[0]
    assert f'PG_MAJOR: "{server}"' in compose
    assert f"ARG PG_MAJOR={server}" in (ROOT / "contrib" / "docker" / "Dockerfile").read_text()
