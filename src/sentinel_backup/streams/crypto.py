"""Encryption stages: openssl-compatible AES-256-CBC and age (pyrage), both streamed.

AES artifacts are exactly what ``openssl enc -aes-256-cbc -salt -pbkdf2 -pass file:KEY``
writes (OpenSSL 3 defaults: ``Salted__`` + 8-byte salt, PBKDF2-HMAC-SHA256 with 10000
iterations giving key and IV, PKCS7 padding). CBC has no integrity of its own: the
stored artifact's SHA-256 must be checked before decrypted bytes are trusted.

age artifacts are written and read by pyrage, whose streaming API is pull-based
(``encrypt_io(reader, writer, ...)``); :class:`_Bridge` runs it in a worker thread that
takes strict turns with the caller, so every downstream write happens in the caller's
thread and memory stays bounded by about one chunk.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyrage
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher as _BlockCipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from ..config import EncryptionMethod, Settings
from ..errors import BackupFailed, ConfigError, SentinelError, VerifyFailed
from .base import CHUNK, Sink

AES = EncryptionMethod.AES.value
AGE = EncryptionMethod.AGE.value
EXTENSIONS = {AES: ".enc", AGE: ".age"}

MAGIC = b"Salted__"
PBKDF2_ITERATIONS = 10_000  # openssl enc -pbkdf2 default
_OPENSSL_PASS_MAX = 1023  # openssl reads at most this many bytes of the password line
_KEY_ID_SALT = b"sentinel-backup/aes-key-id/v1"
_KEY_ID_ITERATIONS = 100_000  # costlier than attacking an artifact: the id is no shortcut
_DAMAGED = "the artifact is damaged or was tampered with; use another backup"


class Cipher(ABC):
    """One configured encryption scheme: builds encrypting and decrypting stages."""

    method: str  # manifest value: "aes-256-cbc" or "age"
    key_id: str  # non-secret identifier of the key a backup needs
    extension: str  # ".enc" or ".age"
    can_decrypt: bool

    @abstractmethod
    def encryptor(self, downstream: Sink) -> Sink: ...

    @abstractmethod
    def decryptor(self, downstream: Sink) -> Sink: ...

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.method} {self.key_id}>"


# --- AES-256-CBC ---------------------------------------------------------------------


def _derive(password: bytes, salt: bytes) -> tuple[bytes, bytes]:
    material = hashlib.pbkdf2_hmac("sha256", password, salt, PBKDF2_ITERATIONS, 48)
    return material[:32], material[32:]


def aes_key_id(password: bytes) -> str:
    """Fingerprint of an AES password: a slow, salted PBKDF2 of it, hashed and truncated."""
    derived = hashlib.pbkdf2_hmac("sha256", password, _KEY_ID_SALT, _KEY_ID_ITERATIONS, 32)
    return "sha256:" + hashlib.sha256(derived).hexdigest()[:16]


class _AesEncryptor:
    def __init__(self, password: bytes, downstream: Sink, salt: bytes | None = None) -> None:
        salt = os.urandom(8) if salt is None else salt
        key, iv = _derive(password, salt)
        self._engine = _BlockCipher(algorithms.AES(key), modes.CBC(iv)).encryptor()
        self._padder = padding.PKCS7(128).padder()
        self._header = MAGIC + salt
        self.downstream = downstream

    def _emit(self, out: bytes) -> None:
        if self._header:
            out, self._header = self._header + out, b""
        if out:
            self.downstream.write(out)

    def write(self, data: bytes) -> None:
        self._emit(self._engine.update(self._padder.update(data)))

    def close(self) -> None:
        self._emit(self._engine.update(self._padder.finalize()) + self._engine.finalize())
        self.downstream.close()


class _AesDecryptor:
    """Reads the header across any chunk boundaries; padding is removed (and checked) at close."""

    def __init__(self, password: bytes, downstream: Sink) -> None:
        self._password = password
        self._head = bytearray()
        self._engine: Any = None
        self._unpadder = padding.PKCS7(128).unpadder()
        self.downstream = downstream

    def write(self, data: bytes) -> None:
        if self._engine is None:
            self._head += data
            if len(self._head) < 16:
                return
            if self._head[:8] != MAGIC:
                raise VerifyFailed("not an AES-256-CBC artifact: the 'Salted__' header is missing",
                                   "the artifact is not encrypted with openssl enc -salt, or it is damaged")
            key, iv = _derive(self._password, bytes(self._head[8:16]))
            self._engine = _BlockCipher(algorithms.AES(key), modes.CBC(iv)).decryptor()
            data, self._head = bytes(self._head[16:]), bytearray()
        out = self._unpadder.update(self._engine.update(data))
        if out:
            self.downstream.write(out)

    def close(self) -> None:
        if self._engine is None:
            raise VerifyFailed("AES-256-CBC artifact is truncated: it ends inside the header",
                               "the artifact is incomplete; use another backup")
        try:
            out = self._unpadder.update(self._engine.finalize()) + self._unpadder.finalize()
        except ValueError:
            raise VerifyFailed("AES-256-CBC decryption failed: wrong key or corrupted artifact",
                               "check that ENCRYPTION_KEY_PATH is the key this backup was made with; "
                               "otherwise " + _DAMAGED) from None
        if out:
            self.downstream.write(out)
        self.downstream.close()


class AesCipher(Cipher):
    """openssl enc -aes-256-cbc -salt -pbkdf2 with a password from a key file."""

    method = AES
    extension = EXTENSIONS[AES]
    can_decrypt = True

    def __init__(self, password: bytes) -> None:
        self._password = password
        self.key_id = aes_key_id(password)

    def encryptor(self, downstream: Sink, *, salt: bytes | None = None) -> Sink:
        return _AesEncryptor(self._password, downstream, salt)

    def decryptor(self, downstream: Sink) -> Sink:
        return _AesDecryptor(self._password, downstream)


def _read_private(path: Path, variable: str, create_hint: str, *, line_limit: int | None = None) -> bytes:
    """A secret file's bytes (only its first line up to ``line_limit`` bytes when given);
    refuses files readable by group or others."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{variable}: {path} is not a regular file", f"point {variable} at the file itself")
        if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{variable}: {path} is readable by group or others (mode {info.st_mode & 0o777:o})",
                              f"run: chmod 600 {path}")
        with path.open("rb") as file:
            return file.read() if line_limit is None else file.readline(line_limit)
    except FileNotFoundError:
        raise ConfigError(f"{variable}: {path} does not exist", create_hint) from None
    except OSError as exc:
        raise ConfigError(f"{variable}: cannot read {path}: {exc.strerror}", f"check the permissions of {path}") \
            from None


def read_key_file(path: Path, variable: str = "ENCRYPTION_KEY_PATH") -> bytes:
    """The password exactly as ``openssl -pass file:`` reads it: the first line's bytes without
    its ``\\n`` (a ``\\r`` stays), at most 1023 bytes. Refuses group/other access."""
    hint = f"create it with: openssl rand -base64 32 > {path} && chmod 600 {path}"
    line = _read_private(path, variable, hint, line_limit=_OPENSSL_PASS_MAX + 1)
    password = line.removesuffix(b"\n")[:_OPENSSL_PASS_MAX]
    if not password.strip():
        raise ConfigError(f"{variable}: {path} is empty (the key is its first line)", hint)
    return password


# --- age -----------------------------------------------------------------------------


class _Aborted(Exception):
    """Raised inside the worker to stop pyrage when the stage is abandoned."""


class _Bridge:
    """Runs a pull-style ``fn(reader, writer)`` in a worker thread fed by push-style writes.

    Caller and worker take strict turns (one runs while the other waits), so the output
    collected by the worker is handed over in the caller's thread, and at most about
    one CHUNK of input plus one CHUNK of output is held at any time.
    """

    def __init__(self, fn: Callable[[Any, Any], object], name: str) -> None:
        self._fn = fn
        self._name = name
        self._cond = threading.Condition()
        self._worker_turn = False
        self._state = "input"  # why the worker handed the turn back: input | flush | done
        self._buf = memoryview(b"")
        self._eof = False
        self._abort = False
        self._out: list[bytes] = []
        self._out_size = 0
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None

    # worker side (file-like for pyrage) ------------------------------------------------
    def _yield(self, state: str) -> None:  # lock held
        if self._abort:
            raise _Aborted
        self._state, self._worker_turn = state, False
        self._cond.notify_all()
        while not self._worker_turn:
            self._cond.wait()
        if self._abort:
            raise _Aborted

    def read(self, n: int = -1) -> bytes:
        with self._cond:
            if self._abort:
                raise _Aborted
            while not self._buf:
                if self._eof:
                    return b""
                self._yield("input")
            n = len(self._buf) if n < 0 else min(n, len(self._buf))
            chunk = bytes(self._buf[:n])
            self._buf = self._buf[n:]
            return chunk

    def write(self, data: bytes) -> int:
        if self._abort:
            raise _Aborted
        self._out.append(bytes(data))
        self._out_size += len(data)
        if self._out_size >= CHUNK:
            with self._cond:
                self._yield("flush")
        return len(data)

    def flush(self) -> None:
        pass

    def _run(self) -> None:
        try:
            with self._cond:
                while not self._worker_turn:
                    self._cond.wait()
            if not self._abort:
                self._fn(self, self)
        except BaseException as exc:
            self.error = exc
        with self._cond:
            self._state, self._worker_turn = "done", False
            self._cond.notify_all()

    # caller side ------------------------------------------------------------------------
    def step(self, data: bytes | None) -> tuple[bytes, str]:
        """Hand over ``data`` (None = end of input); run the worker until it needs input,
        has a chunk of output, or is done. Returns (output, state)."""
        with self._cond:
            if data is None:
                self._eof = True
            elif data:
                self._buf = memoryview(data)
            if self._state != "done":
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
                    self._thread.start()
                self._worker_turn = True
                self._cond.notify_all()
                while self._worker_turn:
                    self._cond.wait()
            out = b"".join(self._out)
            self._out.clear()
            self._out_size = 0
            return out, self._state

    def pending(self) -> bool:
        return bool(self._buf)

    def abort(self) -> None:
        """Stop the worker (idempotent); safe from any state, including never started."""
        with self._cond:
            self._abort = True
            self._worker_turn = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join()


class _AgeStage:
    """Push-style Sink around pyrage's encrypt_io/decrypt_io."""

    def __init__(self, fn: Callable[[Any, Any], object], downstream: Sink, name: str,
                 on_error: Callable[[BaseException], SentinelError]) -> None:
        self._bridge = _Bridge(fn, name)
        self._on_error = on_error
        self._failed: BaseException | None = None
        self.downstream = downstream
        # an abandoned stage (upstream failed, close never called) must not leave a thread blocked
        weakref.finalize(self, self._bridge.abort)

    def _step(self, data: bytes | None) -> None:
        if self._failed is not None:
            raise self._failed
        while True:
            out, state = self._bridge.step(data)
            data = b""
            try:
                if out:
                    self.downstream.write(out)
            except BaseException as exc:
                self._failed = exc
                self._bridge.abort()
                raise
            if state == "flush":
                continue
            if state == "done":
                error = self._bridge.error
                if error is None and self._bridge.pending():
                    error = VerifyFailed("unexpected data after the end of the age stream", _DAMAGED)
                if error is not None:
                    self._failed = self._on_error(error) if not isinstance(error, SentinelError) else error
                    raise self._failed
            return

    def write(self, data: bytes) -> None:
        if data:
            self._step(data)

    def close(self) -> None:
        self._step(None)
        self.downstream.close()

    def abort(self) -> None:
        """Stop the worker thread without closing downstream (after an upstream failure)."""
        self._bridge.abort()


def _encrypt_failed(exc: BaseException) -> SentinelError:
    return BackupFailed(f"age encryption failed: {exc}", "this is unexpected; please report it")


def _decrypt_failed(exc: BaseException) -> SentinelError:
    if "No matching keys" in str(exc):
        return VerifyFailed("age decryption failed: the identity in AGE_IDENTITY_FILE is not a recipient of "
                            "this backup (wrong identity)",
                            "use the identity whose public key is listed in the backup's manifest (key_id)")
    return VerifyFailed(f"age decryption failed: {exc}: wrong identity, or corrupted or truncated artifact",
                        _DAMAGED)


class AgeCipher(Cipher):
    """age public-key encryption; decryption needs identities (AGE_IDENTITY_FILE)."""

    method = AGE
    extension = EXTENSIONS[AGE]

    def __init__(self, recipients: Sequence[tuple[str, Any]], identities: Sequence[Any] | None = None) -> None:
        """``recipients``: (canonical text, parsed pyrage recipient) pairs."""
        self._recipients = [r for _, r in recipients if r is not None]
        self._identities = list(identities or [])
        self.key_id = ",".join(text for text, _ in recipients)
        self.can_decrypt = bool(self._identities)

    def encryptor(self, downstream: Sink) -> Sink:
        if not self._recipients:
            raise ConfigError("age encryption needs recipients", "set AGE_RECIPIENTS or AGE_RECIPIENTS_FILE")
        recipients = self._recipients
        return _AgeStage(lambda r, w: pyrage.encrypt_io(r, w, recipients), downstream, "age-encrypt",
                         _encrypt_failed)

    def decryptor(self, downstream: Sink) -> Sink:
        if not self._identities:
            raise ConfigError("cannot decrypt this age backup: AGE_IDENTITY_FILE is not set",
                              "set AGE_IDENTITY_FILE to the age-keygen secret key file (mode 0600) "
                              "whose public key is one of: " + self.key_id)
        identities = self._identities
        return _AgeStage(lambda r, w: pyrage.decrypt_io(r, w, identities), downstream, "age-decrypt",
                         _decrypt_failed)


# --- settings ------------------------------------------------------------------------

_RECIPIENT_HINT = ("an age public key looks like age1... (`age-keygen -y identity.txt` prints it); "
                   "ssh-ed25519 and ssh-rsa public keys work too")
_IDENTITY_HINT = ("point AGE_IDENTITY_FILE at the secret key file made by age-keygen (AGE-SECRET-KEY-1...) "
                  "whose public key is in AGE_RECIPIENTS; a new key cannot read existing backups")


def parse_recipient(text: str, variable: str) -> tuple[str, Any]:
    """(canonical text, pyrage recipient) for an ``age1...`` or ssh public key."""
    text = text.strip()
    if text.upper().startswith("AGE-SECRET-KEY-"):
        raise ConfigError(f"{variable} contains an age secret key (AGE-SECRET-KEY-...), not a public key",
                          "put the public key there (`age-keygen -y identity.txt`); keep the secret key "
                          "off the backup host")
    try:
        if text.startswith("ssh-"):
            canonical = " ".join(text.split()[:2])  # drop the comment
            return canonical, pyrage.ssh.Recipient.from_str(canonical)
        recipient = pyrage.x25519.Recipient.from_str(text)
        return str(recipient), recipient
    except pyrage.RecipientError as exc:
        shown = text if len(text) <= 100 else text[:100] + "..."
        raise ConfigError(f"{variable}: {shown!r} is not a valid age recipient ({exc})", _RECIPIENT_HINT) from None


def recipients_from_settings(settings: Settings) -> list[tuple[str, Any]]:
    """Recipients from AGE_RECIPIENTS (comma-separated) and AGE_RECIPIENTS_FILE (one per line, # comments)."""
    found = [parse_recipient(t, "AGE_RECIPIENTS") for t in (settings.age_recipients or "").split(",") if t.strip()]
    path = settings.age_recipients_file
    if path is not None:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            raise ConfigError(f"AGE_RECIPIENTS_FILE: {path} does not exist",
                              "create it with one age1... public key per line, or fix AGE_RECIPIENTS_FILE") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"AGE_RECIPIENTS_FILE: cannot read {path}: {exc}", f"check {path}") from None
        listed = [parse_recipient(line, f"AGE_RECIPIENTS_FILE ({path})") for line in lines
                  if line.strip() and not line.lstrip().startswith("#")]
        if not listed:
            raise ConfigError(f"AGE_RECIPIENTS_FILE: {path} contains no recipients",
                              "put one age1... public key per line")
        found += listed
    unique: dict[str, Any] = {}
    for text, recipient in found:
        unique.setdefault(text, recipient)
    return list(unique.items())


def load_identities(path: Path, variable: str = "AGE_IDENTITY_FILE") -> list[Any]:
    """age identities (``AGE-SECRET-KEY-1...`` lines, as age-keygen writes) or an unencrypted
    OpenSSH private key. The file must not be readable by group or others."""
    data = _read_private(path, variable, _IDENTITY_HINT)
    if b"-----BEGIN OPENSSH PRIVATE KEY-----" in data:
        try:
            return [pyrage.ssh.Identity.from_buffer(data)]
        except pyrage.IdentityError as exc:
            raise ConfigError(f"{variable}: {path} is not a usable ssh private key ({exc})",
                              "passphrase-protected ssh keys are not supported; use an age identity") from None
    identities = []
    for number, raw in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("age1"):
            raise ConfigError(f"{variable}: {path} holds a public key (age1...), not an identity",
                              "AGE_IDENTITY_FILE is the secret key file made by age-keygen (AGE-SECRET-KEY-1...)")
        try:  # the line is secret: never echo it
            identities.append(pyrage.x25519.Identity.from_str(line))
        except pyrage.IdentityError:
            raise ConfigError(f"{variable}: line {number} of {path} is not a valid age identity",
                              "expected AGE-SECRET-KEY-1... lines as written by age-keygen") from None
    if not identities:
        raise ConfigError(f"{variable}: {path} contains no identity", _IDENTITY_HINT)
    return identities


def _public_of(identity: Any) -> str | None:
    return str(identity.to_public()) if isinstance(identity, pyrage.x25519.Identity) else None


def _check_identity(recipients: Sequence[tuple[str, Any]], identities: Sequence[Any], path: Path | None,
                    needed_by: str) -> None:
    """Refuse identities that can decrypt for none of the recipients (when that can be told:
    x25519 identities and age1 recipients only)."""
    publics = [_public_of(i) for i in identities]
    wanted = {text for text, _ in recipients if text}
    if wanted and all(t.startswith("age1") for t in wanted) and all(publics) and wanted.isdisjoint(publics):
        raise ConfigError(f"{needed_by} needs a different age identity: AGE_IDENTITY_FILE ({path}) is the "
                          f"identity of {', '.join(map(str, publics))}, not of {', '.join(sorted(wanted))}",
                          "set AGE_IDENTITY_FILE to the secret key of one of those recipients")


def cipher_from_settings(settings: Settings, *, for_reading: bool = False) -> Cipher | None:
    """The cipher for new backups (None when ENCRYPT_ENABLED is false); raises ConfigError on bad
    settings. ``for_reading`` also loads AGE_IDENTITY_FILE (when set) so the cipher can decrypt."""
    if not settings.encrypt_enabled:
        return None
    if settings.encryption_method is EncryptionMethod.AES:
        path = settings.encryption_key_path
        if path is None:
            raise ConfigError("ENCRYPT_ENABLED=true with ENCRYPTION_METHOD=aes-256-cbc needs ENCRYPTION_KEY_PATH",
                              "make a key with `openssl rand -base64 32 > backup.key && chmod 600 backup.key` and "
                              "set ENCRYPTION_KEY_PATH, or use ENCRYPTION_METHOD=age with AGE_RECIPIENTS")
        return AesCipher(read_key_file(path))
    identities = None
    if for_reading and settings.age_identity_file is not None:
        identities = load_identities(settings.age_identity_file)
    recipients = recipients_from_settings(settings)
    if not recipients:
        publics = [p for p in map(_public_of, identities or []) if p]
        if not publics:
            raise ConfigError("ENCRYPT_ENABLED=true with ENCRYPTION_METHOD=age needs AGE_RECIPIENTS or "
                              "AGE_RECIPIENTS_FILE", "make a key pair with `age-keygen -o identity.txt`, keep "
                              "identity.txt off the backup host, and set AGE_RECIPIENTS to its public key")
        recipients = [parse_recipient(p, "AGE_IDENTITY_FILE") for p in publics]
    if identities:
        _check_identity(recipients, identities, settings.age_identity_file, "AGE_RECIPIENTS")
    return AgeCipher(recipients, identities)


def cipher_for_manifest(method: str, key_id: str, settings: Settings) -> Cipher:
    """The cipher that reads an existing backup whose manifest records ``method`` and ``key_id``,
    with the key file or identity from settings (ENCRYPT_ENABLED does not matter here)."""
    if method == AES:
        path = settings.encryption_key_path
        if path is None:
            raise ConfigError(f"this backup is encrypted with aes-256-cbc (key {key_id}) but ENCRYPTION_KEY_PATH "
                              "is not set", "set ENCRYPTION_KEY_PATH to the key file the backup was made with")
        cipher = AesCipher(read_key_file(path))
        if key_id and cipher.key_id != key_id:
            raise ConfigError(f"this backup needs a different key: it was encrypted with key {key_id}, but "
                              f"ENCRYPTION_KEY_PATH ({path}) is key {cipher.key_id}",
                              "set ENCRYPTION_KEY_PATH to the key file this backup was made with")
        return cipher
    if method == AGE:
        recipients: list[tuple[str, Any]] = []
        for text in (t.strip() for t in key_id.split(",")):
            try:
                recipients.append(parse_recipient(text, "manifest key_id"))
            except ConfigError:
                recipients.append((text, None))
        path = settings.age_identity_file
        identities = load_identities(path) if path is not None else None
        if identities:
            _check_identity(recipients, identities, path, "this backup")
        return AgeCipher([(t, r) for t, r in recipients if t], identities)
    raise VerifyFailed(f"the manifest names an unknown encryption method {method!r}",
                       "this backup was made by another version of the tool; upgrade sentinel-backup")
