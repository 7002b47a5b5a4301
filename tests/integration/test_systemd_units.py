"""The systemd units in contrib/systemd/ pass the real `systemd-analyze verify` (and `security`),
run as the dedicated user, hardened, write only where the docs put files, and are the very
files docs/operations.md shows."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = ROOT / "contrib" / "systemd"
SHIPPED = "/usr/local/bin/sentinel-backup"
MAIN = ("sentinel-backup.service", "sentinel-backup-scheduler.service", "sentinel-backup-drill@.service",
        "sentinel-backup-wal-receive.service")


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze")
    if found is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing in CI: scripts/setup installs the Debian package systemd")
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    return found


def unit_files() -> list[Path]:
    return sorted(p for p in UNITS.iterdir() if p.suffix in (".service", ".timer"))


def directives(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in path.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def instantiated(folder: Path) -> list[str]:
    """The units as shipped, in ``folder``, with the program path pointing at this test's program
    (verify checks that every ExecStart program exists) and templates given an instance."""
    program = str(Path(sys.executable).parent / "sentinel-backup")
    names = []
    for path in unit_files():
        text = path.read_text().replace(SHIPPED, program)
        (folder / path.name).write_text(text)
        name = path.name
        if "@." in name:  # a template: verify an instance of it
            instance = "sentinel-backup.service" if name.startswith("sentinel-backup-failure@") else "app"
            name = name.replace("@.", f"@{instance}.")
            (folder / name).write_text(text)
        names.append(name)
    return names


def test_systemd_analyze_verify_passes_without_a_warning(tmp_path: Path) -> None:
    tool = systemd_analyze()
    names = instantiated(tmp_path)
    assert len(names) == 7
    proc = subprocess.run([tool, "verify", "--man=no", *names], cwd=tmp_path, capture_output=True, text=True,
                          check=False, timeout=120)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == "", proc.stdout + proc.stderr


def test_verify_would_catch_a_broken_unit(tmp_path: Path) -> None:
    tool = systemd_analyze()
    instantiated(tmp_path)
    broken = tmp_path / "sentinel-backup.service"
    broken.write_text(broken.read_text().replace("ProtectSystem=strict", "ProtectSytem=strict"))
    proc = subprocess.run([tool, "verify", "--man=no", broken.name], cwd=tmp_path, capture_output=True, text=True,
                          check=False, timeout=120)
    assert "Unknown key" in proc.stderr and "ProtectSytem" in proc.stderr


@pytest.mark.parametrize("name", MAIN)
def test_exposure_is_low(tmp_path: Path, name: str) -> None:
    tool = systemd_analyze()
    instantiated(tmp_path)
    unit = name.replace("@.", "@app.")
    proc = subprocess.run([tool, "security", "--offline=yes", "--man=no", "--threshold=40", unit], cwd=tmp_path,
                          capture_output=True, text=True, check=False, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr  # exposure 4.0 or lower ("OK")


@pytest.mark.parametrize("name", MAIN)
def test_dedicated_user_and_hardening(name: str) -> None:
    found = directives(UNITS / name)
    assert found["User"] == ["sentinel-backup"] and found["Group"] == ["sentinel-backup"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
                       "PrivateTmp": "yes", "UMask": "0077"}.items():
        assert found[key] == [value], key
    assert found["TimeoutStartSec"] and found["TimeoutStopSec"]
    [failure] = found["OnFailure"]
    template = re.sub(r"@%n\.service$", "@.service", failure)
    assert template != failure and (UNITS / template).is_file(), failure  # the OnFailure unit is defined


def test_writable_paths_cover_every_file_the_docs_configure() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text() + (ROOT / "README.md").read_text()
    configured = {m.group(1): Path(m.group(2)) for m in re.finditer(
        r"\b(BACKUP_DIR|METRICS_FILE|LOG_FILE)=(/[^\s`\"']+)", docs)}
    assert set(configured) == {"BACKUP_DIR", "METRICS_FILE", "LOG_FILE"}, configured
    folders = {"BACKUP_DIR": configured["BACKUP_DIR"], "METRICS_FILE": configured["METRICS_FILE"].parent,
               "LOG_FILE": configured["LOG_FILE"].parent}
    for name in MAIN:
        writable = [Path(p.lstrip("-")) for line in directives(UNITS / name)["ReadWritePaths"] for p in line.split()]
        for variable, folder in folders.items():
            assert any(folder == w or w in folder.parents for w in writable), (name, variable, folder)


def test_scheduler_and_timers_can_be_enabled() -> None:
    for service in ("sentinel-backup-scheduler.service", "sentinel-backup-wal-receive.service"):
        assert directives(UNITS / service)["WantedBy"] == ["multi-user.target"]
    for timer in ("sentinel-backup.timer", "sentinel-backup-drill@.timer"):
        assert directives(UNITS / timer)["WantedBy"] == ["timers.target"]


def test_cron_and_units_are_quiet_on_success() -> None:
    for name in ("sentinel-backup.service", "sentinel-backup-drill@.service"):
        [command] = directives(UNITS / name)["ExecStart"]
        assert "--quiet" in command
    docs = (ROOT / "docs" / "operations.md").read_text()
    cron = [line for line in docs.splitlines() if re.match(r"^[0-9*]", line) and "sentinel-backup" in line]
    assert cron and all("--quiet" in line for line in cron), cron


def test_the_docs_show_exactly_these_files() -> None:
    docs = (ROOT / "docs" / "operations.md").read_text()
    shipped = [*unit_files(), UNITS / "sentinel-backup.sysusers.conf", UNITS / "sentinel-backup.tmpfiles.conf"]
    for path in shipped:
        assert f"`contrib/systemd/{path.name}`" in docs, path.name
        assert f"```ini\n{path.read_text()}```" in docs, f"docs/operations.md differs from {path.name}"
    shown = re.findall(r"`contrib/systemd/([^`]+)`:\n\n```ini\n", docs)
    assert sorted(shown) == sorted(p.name for p in shipped)
