"""Keys and recipients from the settings: reading, validating, and building ciphers.

Every problem is a ConfigError (exit 2) naming the variable and the fix, raised before
any dump starts: key file missing, empty or readable by others; an age recipient that
does not parse; an identity that does not match the recipients.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyrage

from sentinel_backup.choices import EncryptionMethod
from sentinel_backup.config_values import read_private_file
from sentinel_backup.errors import ConfigError, VerifyFailed
from sentinel_backup.streams.crypto import _OPENSSL_PASS_MAX, AES, AGE, AesCipher, AgeCipher, Cipher

if TYPE_CHECKING:  # the schema (pydantic) is not imported: the lean reader's settings serve too
    from sentinel_backup.config import Settings


def read_key_file(path: Path, variable: str = "ENCRYPTION_KEY_PATH") -> bytes:
    """The password exactly as ``openssl -pass file:`` reads it: the first line's bytes without
    its ``\\n`` (a ``\\r`` stays), at most 1023 bytes. Refuses group/other access."""
    hint = f"create it with: openssl rand -base64 32 > {path} && chmod 600 {path}"
    line = read_private_file(path, variable, hint, line_limit=_OPENSSL_PASS_MAX + 1)
    password = line.removesuffix(b"\n")[:_OPENSSL_PASS_MAX]
    if not password.strip():
        raise ConfigError(f"{variable}: {path} is empty (the key is its first line)", hint)
    return password


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
    data = read_private_file(path, variable, _IDENTITY_HINT)
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
