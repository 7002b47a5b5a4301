"""Encryption stages: AES-256-CBC (openssl enc format) and age (pyrage), plus settings validation."""

from __future__ import annotations

import base64
import gc
import hashlib
import os
import random
import re
import threading
from pathlib import Path
from typing import Any

import pyrage
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from sentinel_backup.choices import Compression
from sentinel_backup.config import Settings, load_settings
from sentinel_backup.errors import ConfigError, SentinelError, VerifyFailed
from sentinel_backup.keys import cipher_for_manifest, cipher_from_settings, read_key_file
from sentinel_backup.streams.base import CHUNK, Sink
from sentinel_backup.streams.compress import compressor, decompressor
from sentinel_backup.streams.crypto import AesCipher, AgeCipher, Cipher, aes_key_id

_VARS = ("ENCRYPT_ENABLED", "ENCRYPTION_METHOD", "ENCRYPTION_KEY_PATH", "AGE_RECIPIENTS", "AGE_RECIPIENTS_FILE",
         "AGE_IDENTITY_FILE", "SENTINEL_ENV_FILE")
SALT = bytes(range(8))


class Collect:
    """A Sink that keeps everything (tests only)."""

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed
        self.chunks.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)


class Exploding(Collect):
    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after

    def write(self, data: bytes) -> None:
        if sum(map(len, self.chunks)) >= self.after:
            raise OSError("disk full")
        super().write(data)


def feed(sink: Sink, data: bytes, sizes: list[int] | int) -> None:
    """Write ``data`` in pieces of the given sizes (cycled), then close."""
    sizes = [sizes] if isinstance(sizes, int) else sizes
    pos = i = 0
    while pos < len(data):
        step = max(1, sizes[i % len(sizes)])
        sink.write(data[pos:pos + step])
        pos += step
        i += 1
    sink.close()


def encrypt(cipher: Cipher, data: bytes, sizes: list[int] | int = CHUNK) -> bytes:
    out = Collect()
    feed(cipher.encryptor(out), data, sizes)
    assert out.closed
    return out.data


def decrypt(cipher: Cipher, data: bytes, sizes: list[int] | int = CHUNK) -> bytes:
    out = Collect()
    feed(cipher.decryptor(out), data, sizes)
    assert out.closed
    return out.data


_before: set[threading.Thread] = set()


def age_threads() -> list[threading.Thread]:
    """age worker threads started by this test and still alive."""
    return [t for t in threading.enumerate() if t.name.startswith("age-") and t not in _before]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in _VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    _before.clear()
    _before.update(threading.enumerate())


def settings(tmp_path: Path, **env: Any) -> Settings:
    base = {"POSTGRES_USER": "u", "POSTGRES_DB": "db", "BACKUP_DIR": str(tmp_path / "backups"),
            "ENCRYPT_ENABLED": "true"}
    return load_settings(**{**base, **env})


@pytest.fixture
def key_file(tmp_path: Path) -> Path:
    path = tmp_path / "backup.key"
    path.write_text(base64.b64encode(os.urandom(32)).decode() + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def aes(key_file: Path) -> AesCipher:
    return AesCipher(read_key_file(key_file))


@pytest.fixture
def identity() -> Any:
    return pyrage.x25519.Identity.generate()


def write_identity(path: Path, *identities: Any) -> Path:
    lines = ["# created: 2024-01-01T00:00:00Z"]
    for ident in identities:
        lines += [f"# public key: {ident.to_public()}", str(ident)]
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
def age(identity: Any) -> AgeCipher:
    pub = identity.to_public()
    return AgeCipher([(str(pub), pub)], [identity])


def payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


# --- AES -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 15, 16, 17, 4096, CHUNK + 3])
def test_aes_round_trip_sizes(aes: AesCipher, size: int) -> None:
    data = payload(size)
    stored = encrypt(aes, data)
    assert stored[:8] == b"Salted__"
    assert len(stored) == 16 + (size // 16 + 1) * 16  # header + PKCS7 always pads
    assert decrypt(aes, stored) == data


def test_aes_arbitrary_chunk_boundaries(aes: AesCipher) -> None:
    data = payload(200_003, seed=2)
    stored = encrypt(aes, data, [1, 7, 16, 4095, 33_333])
    # header split across writes, blocks split mid-way, whole file in one write
    for sizes in ([3, 5, 8, 1], [15, 17], [16], [65_536 + 1], [len(stored)]):
        assert decrypt(aes, stored, sizes) == data
    assert decrypt(aes, encrypt(aes, data[:3000]), 1) == data[:3000]  # one byte at a time
    out = Collect()
    dec = aes.decryptor(out)
    for b in stored[:40]:
        dec.write(bytes([b]))
    dec.write(stored[40:])
    dec.close()
    assert out.data == data


def test_aes_fixed_salt_is_deterministic_and_random_salt_is_not(aes: AesCipher) -> None:
    out1, out2 = Collect(), Collect()
    feed(aes.encryptor(out1, salt=SALT), b"x" * 100, 10)
    feed(aes.encryptor(out2, salt=SALT), b"x" * 100, 100)
    assert out1.data == out2.data and out1.data[8:16] == SALT
    assert encrypt(aes, b"x" * 100) != encrypt(aes, b"x" * 100)


def test_aes_padding_is_held_back_until_close(aes: AesCipher) -> None:
    stored = encrypt(aes, b"a" * 32)  # 16 header + 3 blocks (the last one is all padding)
    out = Collect()
    dec = aes.decryptor(out)
    dec.write(stored)
    assert len(out.data) <= 32 and not out.closed
    dec.close()
    assert out.data == b"a" * 32 and out.closed


def test_aes_wrong_key_raises(aes: AesCipher) -> None:
    other = AesCipher(b"not the right password")
    out = Collect()
    feed(aes.encryptor(out, salt=SALT), payload(10_000), CHUNK)
    with pytest.raises(VerifyFailed, match="wrong key or corrupted artifact") as info:
        decrypt(other, out.data)
    assert info.value.hint and "ENCRYPTION_KEY_PATH" in info.value.hint


def gzip_then(cipher: Cipher, data: bytes) -> bytes:
    out = Collect()
    feed(compressor(Compression.GZIP, 6, cipher.encryptor(out)), data, 65_536)
    return out.data


def gunzip_after(cipher: Cipher, stored: bytes) -> bytes:
    out = Collect()
    feed(cipher.decryptor(decompressor(Compression.GZIP, out)), stored, 65_536)
    return out.data


@pytest.mark.parametrize("seed", range(5))
def test_aes_wrong_key_through_pipeline_always_detected(aes: AesCipher, seed: int) -> None:
    """Bad CBC padding is only detected 255/256 of the time; gzip behind it catches the rest."""
    stored = gzip_then(aes, payload(50_000, seed))
    with pytest.raises(VerifyFailed):
        gunzip_after(AesCipher(f"wrong-{seed}".encode()), stored)


@pytest.mark.parametrize("where", ["header", "first block", "middle", "last block"])
def test_aes_tampering_detected(aes: AesCipher, where: str) -> None:
    data = b"SELECT 1;\n" * 20_000
    stored = bytearray(gzip_then(aes, data))
    assert gunzip_after(aes, bytes(stored)) == data
    pos = {"header": 3, "first block": 20, "middle": len(stored) // 2, "last block": len(stored) - 1}[where]
    stored[pos] ^= 0x01
    with pytest.raises(VerifyFailed):
        gunzip_after(aes, bytes(stored))


def test_aes_flip_in_the_middle_garbles_silently(aes: AesCipher) -> None:
    """CBC has no integrity: only the artifact's SHA-256 (checked first) or a decompressor catch this."""
    data = payload(100_000)
    stored = bytearray(encrypt(aes, data))
    stored[50_000] ^= 0x80
    garbled = decrypt(aes, bytes(stored))
    assert len(garbled) == len(data) and garbled != data
    diff = [i for i in range(len(data)) if garbled[i] != data[i]]
    assert diff[0] >= 50_000 - 16 - 16 and diff[-1] < 50_000 + 16


@pytest.mark.parametrize("cut", [0, 5, 15, 16 + 7, -1, -16])
def test_aes_truncated(aes: AesCipher, cut: int) -> None:
    out = Collect()
    feed(aes.encryptor(out, salt=SALT), payload(1000), 1000)
    with pytest.raises(VerifyFailed, match=r"truncated|wrong key or corrupted"):
        decrypt(aes, out.data[:cut])


def test_aes_rejects_data_without_salted_header(aes: AesCipher) -> None:
    with pytest.raises(VerifyFailed, match="Salted__"):
        decrypt(aes, b"\x1f\x8b" + payload(100))


def test_aes_key_id(key_file: Path, tmp_path: Path) -> None:
    password = read_key_file(key_file)
    key_id = aes_key_id(password)
    assert re.fullmatch(r"sha256:[0-9a-f]{16}", key_id)
    assert AesCipher(password).key_id == key_id
    assert aes_key_id(password + b"x") != key_id
    assert password.decode() not in key_id
    assert hashlib.sha256(password).hexdigest()[:16] not in key_id  # no cheap fingerprint


def test_key_file_is_read_like_openssl(tmp_path: Path) -> None:
    path = tmp_path / "k"
    for content, expected in [(b"abc\n", b"abc"), (b"abc", b"abc"), (b"abc\r\nnext\n", b"abc\r"),
                              (b"a" * 2000 + b"\n", b"a" * 1023), (b" spaced pw \nx", b" spaced pw ")]:
        path.write_bytes(content)
        path.chmod(0o600)
        assert read_key_file(path) == expected


# --- age -------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 65_536, 65_537, 3 * CHUNK + 5])
def test_age_round_trip_sizes(age: AgeCipher, size: int) -> None:
    data = payload(size)
    stored = encrypt(age, data)
    assert stored.startswith(b"age-encryption.org/v1\n")
    assert pyrage.decrypt(stored, [age._identities[0]]) == data
    assert decrypt(age, stored) == data
    assert not age_threads()


def test_age_arbitrary_chunk_boundaries(age: AgeCipher) -> None:
    data = payload(300_001, seed=3)
    stored = encrypt(age, data, [1, 100, 8191, 8193, 70_000])
    for sizes in ([1, 2, 3, 50, 7000], [65_536], [len(stored)], [CHUNK * 4]):
        assert decrypt(age, stored, sizes) == data


def test_age_output_is_chunked_even_for_one_huge_write(age: AgeCipher) -> None:
    out = Collect()
    feed(age.encryptor(out), payload(5 * CHUNK), 5 * CHUNK)
    assert max(map(len, out.chunks)) <= CHUNK + 70_000
    plain = Collect()
    feed(age.decryptor(plain), out.data, len(out.data))
    assert max(map(len, plain.chunks)) <= CHUNK + 70_000
    assert plain.data == payload(5 * CHUNK)


def test_age_multiple_recipients_each_can_decrypt() -> None:
    ids = [pyrage.x25519.Identity.generate() for _ in range(2)]
    pubs = [(str(i.to_public()), i.to_public()) for i in ids]
    stored = encrypt(AgeCipher(pubs), b"hello" * 1000)
    for ident in ids:
        assert decrypt(AgeCipher(pubs, [ident]), stored) == b"hello" * 1000


def test_age_ssh_ed25519_recipient(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    ident = tmp_path / "id_ed25519"
    ident.write_bytes(private)
    ident.chmod(0o600)
    s = settings(tmp_path, ENCRYPTION_METHOD="age", AGE_RECIPIENTS=public.decode() + " me@host",
                 AGE_IDENTITY_FILE=str(ident))
    cipher = cipher_from_settings(s, for_reading=True)
    assert cipher is not None and cipher.can_decrypt and cipher.key_id == public.decode()
    assert decrypt(cipher, encrypt(cipher, b"ssh" * 999)) == b"ssh" * 999


def test_age_wrong_identity(age: AgeCipher) -> None:
    stored = encrypt(age, payload(10_000))
    other = pyrage.x25519.Identity.generate()
    with pytest.raises(VerifyFailed, match="wrong identity"):
        decrypt(AgeCipher([], [other]), stored)
    assert not age_threads()


@pytest.mark.parametrize("where", ["version line", "header mac", "payload", "last byte"])
def test_age_tampering_detected(age: AgeCipher, where: str) -> None:
    data = payload(200_000)
    stored = bytearray(encrypt(age, data))
    header_end = stored.index(b"\n---") + 50
    pos = {"version line": 2, "header mac": header_end - 5, "payload": 100_000, "last byte": len(stored) - 1}[where]
    stored[pos] ^= 0x01
    with pytest.raises(VerifyFailed, match="age decryption failed"):
        decrypt(age, bytes(stored), 8192)
    assert not age_threads()


@pytest.mark.parametrize("change", ["truncate header", "drop last chunk", "cut 1 byte", "empty", "trailing"])
def test_age_truncated_or_extended(age: AgeCipher, change: str) -> None:
    stored = encrypt(age, payload(150_000))
    broken = {"truncate header": stored[:40], "drop last chunk": stored[:-(150_000 - 2 * 65_536) - 16],
              "cut 1 byte": stored[:-1], "empty": b"", "trailing": stored + b"\0"}[change]
    with pytest.raises(VerifyFailed):
        decrypt(age, broken)
    assert not age_threads()


def test_age_downstream_failure_propagates_without_deadlock(age: AgeCipher) -> None:
    for make in (age.encryptor, age.decryptor):
        source = payload(4 * CHUNK) if make == age.encryptor else encrypt(age, payload(4 * CHUNK))
        stage = make(Exploding(after=CHUNK))
        with pytest.raises(OSError, match="disk full"):
            for i in range(0, len(source), 100_000):
                stage.write(source[i:i + 100_000])
        with pytest.raises(OSError, match="disk full"):
            stage.close()
        assert not age_threads()


def test_age_abandoned_stage_releases_its_thread(age: AgeCipher) -> None:
    stage = age.encryptor(Collect())
    stage.write(payload(100_000))
    assert age_threads()
    del stage
    gc.collect()
    assert not age_threads()
    stage2 = age.decryptor(Collect())
    stage2.write(encrypt(age, b"x" * 100_000)[:1000])
    stage2.abort()  # type: ignore[attr-defined]
    assert not age_threads()


# --- settings --------------------------------------------------------------------------


def config_error(tmp_path: Path, for_reading: bool = False, **env: Any) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        cipher_from_settings(settings(tmp_path, **env), for_reading=for_reading)
    assert info.value.exit_code == 2
    return info.value


def test_disabled_means_no_cipher(tmp_path: Path, key_file: Path) -> None:
    assert cipher_from_settings(settings(tmp_path, ENCRYPT_ENABLED="false", ENCRYPTION_KEY_PATH=str(key_file))) \
        is None


def test_aes_from_settings(tmp_path: Path, key_file: Path) -> None:
    cipher = cipher_from_settings(settings(tmp_path, ENCRYPTION_KEY_PATH=str(key_file)))
    assert isinstance(cipher, AesCipher)
    assert (cipher.method, cipher.extension, cipher.can_decrypt) == ("aes-256-cbc", ".enc", True)


def test_aes_settings_errors(tmp_path: Path, key_file: Path) -> None:
    err = config_error(tmp_path)
    assert "ENCRYPTION_KEY_PATH" in err.message and "openssl rand" in str(err.hint)
    err = config_error(tmp_path, ENCRYPTION_KEY_PATH=str(tmp_path / "nope.key"))
    assert "ENCRYPTION_KEY_PATH" in err.message and "does not exist" in err.message
    empty = tmp_path / "empty.key"
    empty.write_text("\n")
    empty.chmod(0o600)
    err = config_error(tmp_path, ENCRYPTION_KEY_PATH=str(empty))
    assert "ENCRYPTION_KEY_PATH" in err.message and "empty" in err.message
    err = config_error(tmp_path, ENCRYPTION_KEY_PATH=str(tmp_path))
    assert "ENCRYPTION_KEY_PATH" in err.message and "not a regular file" in err.message
    for mode in (0o644, 0o640, 0o604, 0o660):
        key_file.chmod(mode)
        err = config_error(tmp_path, ENCRYPTION_KEY_PATH=str(key_file))
        assert "ENCRYPTION_KEY_PATH" in err.message and "group or others" in err.message
        assert err.hint == f"run: chmod 600 {key_file}"


def test_age_from_settings(tmp_path: Path, identity: Any) -> None:
    pub = str(identity.to_public())
    other = str(pyrage.x25519.Identity.generate().to_public())
    rfile = tmp_path / "recipients.txt"
    rfile.write_text(f"# ops team\n\n{other}\n  {pub}  \n")
    cipher = cipher_from_settings(settings(tmp_path, ENCRYPTION_METHOD="AGE", AGE_RECIPIENTS=f" {pub} , ",
                                           AGE_RECIPIENTS_FILE=str(rfile),
                                           AGE_IDENTITY_FILE=str(tmp_path / "not-needed-for-backup")))
    assert isinstance(cipher, AgeCipher)
    assert (cipher.method, cipher.extension, cipher.can_decrypt) == ("age", ".age", False)
    assert cipher.key_id == f"{pub},{other}"
    with pytest.raises(ConfigError, match="AGE_IDENTITY_FILE"):
        cipher.decryptor(Collect())
    # for reading: the identity is loaded
    ident_file = write_identity(tmp_path / "identity.txt", identity)
    reader = cipher_from_settings(settings(tmp_path, ENCRYPTION_METHOD="age", AGE_RECIPIENTS=pub,
                                           AGE_IDENTITY_FILE=str(ident_file)), for_reading=True)
    assert reader is not None and reader.can_decrypt
    assert decrypt(reader, encrypt(cipher, b"data")) == b"data"
    # identity only (a restore host): recipients derived from it
    only = cipher_from_settings(settings(tmp_path, ENCRYPTION_METHOD="age", AGE_IDENTITY_FILE=str(ident_file)),
                                for_reading=True)
    assert only is not None and only.key_id == pub and only.can_decrypt


def test_age_settings_errors(tmp_path: Path, identity: Any) -> None:
    err = config_error(tmp_path, ENCRYPTION_METHOD="age")
    assert "AGE_RECIPIENTS" in err.message and "age-keygen" in str(err.hint)
    err = config_error(tmp_path, ENCRYPTION_METHOD="age", AGE_RECIPIENTS="age1notakey")
    assert err.message.startswith("AGE_RECIPIENTS:") and "age1notakey" in err.message
    secret = str(identity)
    err = config_error(tmp_path, ENCRYPTION_METHOD="age", AGE_RECIPIENTS=secret)
    assert "AGE_RECIPIENTS" in err.message and "secret key" in err.message and secret not in str(err) + str(err.hint)
    rfile = tmp_path / "recipients.txt"
    err = config_error(tmp_path, ENCRYPTION_METHOD="age", AGE_RECIPIENTS_FILE=str(rfile))
    assert "AGE_RECIPIENTS_FILE" in err.message and "does not exist" in err.message
    rfile.write_text("# nobody\n")
    err = config_error(tmp_path, ENCRYPTION_METHOD="age", AGE_RECIPIENTS_FILE=str(rfile))
    assert "AGE_RECIPIENTS_FILE" in err.message and "no recipients" in err.message
    rfile.write_text(f"{identity.to_public()}\nbogus\n")
    err = config_error(tmp_path, ENCRYPTION_METHOD="age", AGE_RECIPIENTS_FILE=str(rfile))
    assert "AGE_RECIPIENTS_FILE" in err.message and "bogus" in err.message


def test_identity_file_errors(tmp_path: Path, identity: Any) -> None:
    pub = str(identity.to_public())
    path = tmp_path / "identity.txt"

    def err() -> ConfigError:
        e = config_error(tmp_path, True, ENCRYPTION_METHOD="age", AGE_RECIPIENTS=pub, AGE_IDENTITY_FILE=str(path))
        assert "AGE_IDENTITY_FILE" in e.message
        return e

    assert "does not exist" in err().message
    write_identity(path, identity)
    path.chmod(0o644)
    assert err().hint == f"run: chmod 600 {path}"
    path.write_text("AGE-SECRET-KEY-1NOTVALIDATALL\n")
    path.chmod(0o600)
    e = err()
    assert "line 1" in e.message and "NOTVALID" not in e.message  # secrets are never echoed
    path.write_text(pub + "\n")
    assert "public key" in err().message
    path.write_text("# only comments\n")
    assert "no identity" in err().message


def test_cipher_for_manifest_aes(tmp_path: Path, key_file: Path) -> None:
    s = settings(tmp_path, ENCRYPT_ENABLED="false", ENCRYPTION_KEY_PATH=str(key_file))
    key_id = aes_key_id(read_key_file(key_file))
    cipher = cipher_for_manifest("aes-256-cbc", key_id, s)
    assert cipher.can_decrypt and cipher.key_id == key_id
    with pytest.raises(ConfigError, match="needs a different key") as info:
        cipher_for_manifest("aes-256-cbc", "sha256:0000000000000000", s)
    assert "ENCRYPTION_KEY_PATH" in str(info.value.hint)
    with pytest.raises(ConfigError, match="ENCRYPTION_KEY_PATH is not set"):
        cipher_for_manifest("aes-256-cbc", key_id, settings(tmp_path))
    with pytest.raises(VerifyFailed, match="unknown encryption method"):
        cipher_for_manifest("rot13", "", s)


def test_cipher_for_manifest_age(tmp_path: Path, identity: Any) -> None:
    pub = str(identity.to_public())
    stored = encrypt(AgeCipher([(pub, identity.to_public())]), b"payload")
    without = cipher_for_manifest("age", pub, settings(tmp_path, ENCRYPT_ENABLED="false"))
    assert not without.can_decrypt and without.key_id == pub
    with pytest.raises(ConfigError, match="AGE_IDENTITY_FILE") as info:
        without.decryptor(Collect())
    assert isinstance(info.value, SentinelError) and info.value.exit_code == 2
    ident_file = write_identity(tmp_path / "id.txt", pyrage.x25519.Identity.generate(), identity)
    with_id = cipher_for_manifest("age", pub, settings(tmp_path, AGE_IDENTITY_FILE=str(ident_file)))
    assert with_id.can_decrypt and decrypt(with_id, stored) == b"payload"
    wrong_file = write_identity(tmp_path / "wrong.txt", pyrage.x25519.Identity.generate())
    with pytest.raises(ConfigError, match="needs a different age identity"):
        cipher_for_manifest("age", pub, settings(tmp_path, AGE_IDENTITY_FILE=str(wrong_file)))


def test_identity_that_matches_no_recipient_is_refused_for_reading(tmp_path: Path, identity: Any) -> None:
    other = str(pyrage.x25519.Identity.generate().to_public())
    ident_file = write_identity(tmp_path / "identity.txt", identity)
    env = {"ENCRYPTION_METHOD": "age", "AGE_RECIPIENTS": other, "AGE_IDENTITY_FILE": str(ident_file)}
    assert cipher_from_settings(settings(tmp_path, **env)) is not None  # a backup needs no identity
    err = config_error(tmp_path, True, **env)
    assert "different age identity" in err.message and "AGE_IDENTITY_FILE" in err.message
    # one matching recipient among several is enough
    env["AGE_RECIPIENTS"] = f"{other},{identity.to_public()}"
    assert cipher_from_settings(settings(tmp_path, **env), for_reading=True) is not None
