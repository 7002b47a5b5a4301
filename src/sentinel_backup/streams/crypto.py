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
import threading
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import Any

import pyrage
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher as _BlockCipher
from cryptography.hazmat.primitives.ciphers import algorithms, modes

from sentinel_backup.choices import EncryptionMethod
from sentinel_backup.errors import BackupFailed, ConfigError, SentinelError, VerifyFailed
from sentinel_backup.streams.base import CHUNK, Sink

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
