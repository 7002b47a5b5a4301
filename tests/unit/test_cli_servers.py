"""--env-dir: which servers a folder describes, which folder applies, and the run's exit code."""

from __future__ import annotations

from pathlib import Path

import pytest

from sentinel_backup.cli.servers import Server, env_dir, servers, worst
from sentinel_backup.errors import ConfigError


def test_worst_exit_code_of_the_servers() -> None:
    assert worst([0, 0]) == 0 and worst([]) == 0
    assert worst([0, 4]) == 4 and worst([4, 3]) == 3 and worst([3, 2]) == 2 and worst([2, 1, 0]) == 1
    assert worst([0, 77]) == 77  # an unknown code is a failure, never hidden behind a 0


def test_one_server_per_env_file_named_by_its_setting_or_the_file(tmp_path: Path) -> None:
    (tmp_path / "db2.env").write_text("POSTGRES_DB=app\n")
    (tmp_path / "a.env").write_text("SERVER_NAME=pg-eu\n")
    (tmp_path / "notes.txt").write_text("SERVER_NAME=x\n")
    (tmp_path / "sub.env").mkdir()
    assert servers(tmp_path) == [Server("pg-eu", tmp_path / "a.env"), Server("db2", tmp_path / "db2.env")]
    (tmp_path / "db1.env").write_text("SERVER_NAME = db2\n")
    with pytest.raises(ConfigError, match=r"db1\.env and db2\.env .* are both server .db2."):
        servers(tmp_path)


@pytest.mark.parametrize("folder", ["missing", "empty"])
def test_a_folder_without_servers_is_a_configuration_error(tmp_path: Path, folder: str) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"is not a directory|holds no"):
        servers(tmp_path / folder)


def test_which_folder_applies(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SENTINEL_ENV_DIR", raising=False)
    assert env_dir(None, None) is None and env_dir(Path("d"), None) == Path("d")
    monkeypatch.setenv("SENTINEL_ENV_DIR", "/etc/sentinel/servers.d")
    assert env_dir(None, None) == Path("/etc/sentinel/servers.d")
    assert env_dir(None, Path("one.env")) is None  # --env-file names one server: the variable steps aside
    with pytest.raises(ConfigError, match="cannot be combined"):
        env_dir(Path("d"), Path("one.env"))
