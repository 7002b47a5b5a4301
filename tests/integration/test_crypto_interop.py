"""Interop with the real `openssl enc` and `age` programs, both directions, small and ~300 MB streamed."""

from __future__ import annotations

import hashlib
import os
import random
import resource
import subprocess
from collections.abc import Callable
from pathlib import Path

import pyrage
import pytest

from sentinel_backup.keys import load_identities, parse_recipient, read_key_file
from sentinel_backup.streams.base import CHUNK, FileSink, NullSink, Sink, pump
from sentinel_backup.streams.crypto import AesCipher, AgeCipher, Cipher
from sentinel_backup.streams.digest import Digest

BIG = 300 * 1024 * 1024
OPENSSL_DEC = ["openssl", "enc", "-d", "-aes-256-cbc", "-pbkdf2"]
OPENSSL_ENC = ["openssl", "enc", "-aes-256-cbc", "-salt", "-pbkdf2"]


def run(argv: list[str], data: bytes = b"") -> bytes:
    return subprocess.run(argv, input=data, capture_output=True, check=True).stdout


def tool(stage: Sink, data: bytes) -> None:
    for i in range(0, len(data), 100_003):
        stage.write(data[i:i + 100_003])
    stage.close()


class Bytes:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(data)

    def close(self) -> None:
        pass

    def value(self) -> bytes:
        return b"".join(self.parts)


def tool_encrypt(cipher: Cipher, data: bytes) -> bytes:
    out = Bytes()
    tool(cipher.encryptor(out), data)
    return out.value()


def tool_decrypt(cipher: Cipher, data: bytes) -> bytes:
    out = Bytes()
    tool(cipher.decryptor(out), data)
    return out.value()


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "backup.key"
    path.write_bytes(run(["openssl", "rand", "-base64", "32"]))  # exactly as the docs say
    path.chmod(0o600)
    return path


@pytest.fixture
def identity_file(tmp_path: Path) -> Path:
    path = tmp_path / "identity.txt"
    subprocess.run(["age-keygen", "-o", str(path)], check=True, capture_output=True)
    path.chmod(0o600)
    return path


def age_cipher(identity_file: Path) -> AgeCipher:
    public = run(["age-keygen", "-y", str(identity_file)]).decode().strip()
    return AgeCipher([parse_recipient(public, "AGE_RECIPIENTS")], load_identities(identity_file))


SIZES = [0, 1, 15, 16, 17, 65_536, 65_537, 1_000_003]


@pytest.mark.parametrize("size", SIZES)
def test_aes_both_directions_with_openssl(key_file: Path, size: int) -> None:
    cipher = AesCipher(read_key_file(key_file))
    data = random.Random(size).randbytes(size)
    assert run([*OPENSSL_DEC, "-pass", f"file:{key_file}"], tool_encrypt(cipher, data)) == data
    assert tool_decrypt(cipher, run([*OPENSSL_ENC, "-pass", f"file:{key_file}"], data)) == data


@pytest.mark.parametrize("content", [b"pass with spaces\r\nsecond line\n", b"no-newline", b"x" * 1500 + b"\n"])
def test_aes_key_file_edge_cases_match_openssl(tmp_path: Path, content: bytes) -> None:
    key = tmp_path / "odd.key"
    key.write_bytes(content)
    key.chmod(0o600)
    cipher = AesCipher(read_key_file(key))
    data = b"SELECT 1;\n" * 1000
    assert run([*OPENSSL_DEC, "-pass", f"file:{key}"], tool_encrypt(cipher, data)) == data
    assert tool_decrypt(cipher, run([*OPENSSL_ENC, "-pass", f"file:{key}"], data)) == data


def test_openssl_refuses_tool_output_with_other_key(key_file: Path, tmp_path: Path) -> None:
    other = tmp_path / "other.key"
    other.write_text("another\n")
    stored = tool_encrypt(AesCipher(read_key_file(key_file)), b"x" * 4096)
    result = subprocess.run([*OPENSSL_DEC, "-pass", f"file:{other}"], input=stored, capture_output=True)
    assert result.returncode != 0 or result.stdout != b"x" * 4096


@pytest.mark.parametrize("size", SIZES)
def test_age_both_directions_with_age_cli(identity_file: Path, size: int) -> None:
    cipher = age_cipher(identity_file)
    data = random.Random(size).randbytes(size)
    assert run(["age", "-d", "-i", str(identity_file)], tool_encrypt(cipher, data)) == data
    assert tool_decrypt(cipher, run(["age", "-r", cipher.key_id], data)) == data


def test_age_cli_recipients_file_and_several_recipients(identity_file: Path, tmp_path: Path) -> None:
    second = tmp_path / "second.txt"
    subprocess.run(["age-keygen", "-o", str(second)], check=True, capture_output=True)
    recipients = tmp_path / "recipients.txt"
    recipients.write_bytes(run(["age-keygen", "-y", str(identity_file)]) + run(["age-keygen", "-y", str(second)]))
    data = os.urandom(200_000)
    both = AgeCipher([parse_recipient(line, "AGE_RECIPIENTS_FILE") for line in recipients.read_text().split()])
    stored = tool_encrypt(both, data)
    for ident in (identity_file, second):
        assert run(["age", "-d", "-i", str(ident)], stored) == data
    from_cli = run(["age", "-R", str(recipients)], data)
    second.chmod(0o600)
    assert tool_decrypt(AgeCipher([], load_identities(second)), from_cli) == data


def test_age_ssh_ed25519_with_age_cli(tmp_path: Path) -> None:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ops@example", "-f", str(key)], check=True)
    cipher = AgeCipher([parse_recipient(key.with_suffix(".pub").read_text(), "AGE_RECIPIENTS")],
                       load_identities(key))
    data = os.urandom(100_000)
    assert run(["age", "-d", "-i", str(key)], tool_encrypt(cipher, data)) == data
    assert tool_decrypt(cipher, run(["age", "-R", str(key.with_suffix(".pub"))], data)) == data


def test_age_cli_refuses_tampered_tool_output(identity_file: Path) -> None:
    stored = bytearray(tool_encrypt(age_cipher(identity_file), os.urandom(100_000)))
    stored[len(stored) // 2] ^= 1
    result = subprocess.run(["age", "-d", "-i", str(identity_file)], input=bytes(stored), capture_output=True)
    assert result.returncode != 0


# --- ~300 MB streamed through each method, both directions ---------------------------


def make_plain(path: Path, size: int) -> str:
    """A file of distinct 1 MiB blocks; returns its SHA-256 (never held in memory whole)."""
    digest = hashlib.sha256()
    block = bytearray(os.urandom(CHUNK))
    with path.open("wb") as file:
        for n in range(size // CHUNK):
            block[:8] = n.to_bytes(8, "big")
            digest.update(block)
            file.write(block)
    return digest.hexdigest()


def sha256_of_stdout(argv: list[str]) -> str:
    digest = hashlib.sha256()
    with subprocess.Popen(argv, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        while chunk := proc.stdout.read(CHUNK):
            digest.update(chunk)
    assert proc.returncode == 0, argv
    return digest.hexdigest()


def tool_file(stage: Sink, source: Path) -> None:
    with source.open("rb") as reader:
        pump(reader, stage)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def big_round_trip(tmp_path: Path, cipher: Cipher, decrypt_cli: Callable[[Path], list[str]],
                   encrypt_cli: Callable[[Path, Path], list[str]]) -> None:
    plain, stored = tmp_path / "plain.bin", tmp_path / "stored.bin"
    expected = make_plain(plain, BIG)
    rss_before = peak_rss_mib()
    # tool encrypts -> the CLI decrypts
    with stored.open("wb") as out:
        tool_file(cipher.encryptor(FileSink(out)), plain)
    assert stored.stat().st_size > BIG
    assert sha256_of_stdout(decrypt_cli(stored)) == expected
    # the CLI encrypts -> tool decrypts
    stored.unlink()
    subprocess.run(encrypt_cli(plain, stored), check=True)
    check = Digest(NullSink())
    tool_file(cipher.decryptor(check), stored)
    assert check.sha256 == expected and check.size == BIG
    # streaming: the process never grew by anything near the data size
    assert peak_rss_mib() - rss_before < 64


@pytest.mark.slow
def test_aes_300mb_streamed_with_openssl(tmp_path: Path, key_file: Path) -> None:
    password = f"file:{key_file}"
    big_round_trip(tmp_path, AesCipher(read_key_file(key_file)),
                   lambda stored: [*OPENSSL_DEC, "-pass", password, "-in", str(stored)],
                   lambda plain, stored: [*OPENSSL_ENC, "-pass", password, "-in", str(plain), "-out", str(stored)])


@pytest.mark.slow
def test_age_300mb_streamed_with_age_cli(tmp_path: Path, identity_file: Path) -> None:
    cipher = age_cipher(identity_file)
    big_round_trip(tmp_path, cipher, lambda stored: ["age", "-d", "-i", str(identity_file), str(stored)],
                   lambda plain, stored: ["age", "-r", cipher.key_id, "-o", str(stored), str(plain)])


def test_pyrage_and_tool_agree_on_format(identity_file: Path) -> None:
    """Cheap sanity check that the streamed stage writes what pyrage's one-shot API reads."""
    cipher = age_cipher(identity_file)
    data = os.urandom(70_000)
    assert pyrage.decrypt(tool_encrypt(cipher, data), load_identities(identity_file)) == data
