"""The encrypted token store: access/refresh tokens at rest, never in clear text.

File layout (the token file, default ``~/.ccm/auth.json``, mode 0600)::

    {"format": "tablesync-vault", "version": 1, "kdf": "keyfile" | "scrypt",
     "salt": "<b64>", "n": 32768, "r": 8, "p": 1,      # scrypt only
     "data": "<Fernet token of the JSON tokens>"}

Key: with ``TABLESYNC_PASSPHRASE`` (or an explicit ``passphrase``) the Fernet key is
derived with scrypt from the passphrase and the salt stored in the token file; otherwise a
random key lives in a separate key file next to the token file (``auth.json.key``, 0600).
Directories the vault creates are 0700. Writes are atomic (temp file + fsync + rename), so a
crash never leaves half a token file, and the new refresh token is on disk before it is used.
"""

from __future__ import annotations

import base64
import hmac
import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidKey
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from tablesync.errors import VaultError

PASSPHRASE_ENV = "TABLESYNC_PASSPHRASE"
FORMAT = "tablesync-vault"
VERSION = 1
KEY_SUFFIX = ".key"
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**15, 8, 1
MASK = "**********"

__all__ = ["PASSPHRASE_ENV", "Secret", "Tokens", "Vault"]


class Secret:
    """A secret string whose ``repr``/``str`` are masked; ``reveal()`` gives the value."""

    __slots__ = ("_value",)

    def __init__(self, value: str | Secret) -> None:
        self._value = value.reveal() if isinstance(value, Secret) else str(value)

    def reveal(self) -> str:
        """The clear value: only for the wire, never for logs."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{MASK}')"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> Any:
        raise TypeError("a Secret is not picklable")


@dataclass(frozen=True)
class Tokens:
    """A signed-in session: what GoTrue returned, plus which project it belongs to."""

    access_token: Secret
    refresh_token: Secret
    expires_at: float          # unix seconds (UTC)
    user_id: str
    project: str = ""          # the Supabase URL the session was issued by

    def expires_in(self, now: float | None = None) -> float:
        """Seconds until the access token expires (negative once expired)."""
        return self.expires_at - (time.time() if now is None else now)

    def to_json(self) -> dict[str, Any]:
        return {"access_token": self.access_token.reveal(),
                "refresh_token": self.refresh_token.reveal(),
                "expires_at": self.expires_at, "user_id": self.user_id, "project": self.project}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Tokens:
        return cls(Secret(str(data["access_token"])), Secret(str(data["refresh_token"])),
                   float(data["expires_at"]), str(data["user_id"]), str(data.get("project", "")))


class Vault:
    """Read and write :class:`Tokens` encrypted at ``path``.

    Args:
        path: the token file.
        passphrase: derive the key from it (default: ``TABLESYNC_PASSPHRASE`` if set);
            without one, a key file ``<path>.key`` is used (created on first save).
        scrypt_n: scrypt cost for new files (tests may lower it).
    """

    def __init__(self, path: str | os.PathLike[str], *, passphrase: str | Secret | None = None,
                 scrypt_n: int = SCRYPT_N) -> None:
        self.path = Path(os.path.expanduser(os.fspath(path)))
        env = os.environ.get(PASSPHRASE_ENV)
        chosen = passphrase if passphrase is not None else env
        self._passphrase = Secret(chosen) if chosen else None
        self._scrypt_n = scrypt_n

    @property
    def key_path(self) -> Path:
        return self.path.with_name(self.path.name + KEY_SUFFIX)

    def __repr__(self) -> str:
        mode = "passphrase" if self._passphrase else "keyfile"
        return f"Vault({str(self.path)!r}, {mode})"

    # -- public API

    def load(self) -> Tokens | None:
        """The stored tokens, or None when there is no token file yet."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise VaultError(f"{self.path}: cannot read the token store: {exc.strerror}") from exc
        _check_private(self.path)
        doc = self._parse(raw)
        fernet = self._fernet_for(doc)
        try:
            clear = fernet.decrypt(str(doc["data"]).encode("ascii"))
        except (InvalidToken, UnicodeEncodeError) as exc:
            raise VaultError(self._wrong_key_message(doc)) from exc
        try:
            return Tokens.from_json(json.loads(clear))
        except (ValueError, KeyError, TypeError) as exc:
            raise VaultError(f"{self.path}: decrypted token store is malformed",
                             hint="run `tablesync login`") from exc

    def save(self, tokens: Tokens) -> None:
        """Encrypt and write ``tokens`` atomically (file 0600, new directories 0700)."""
        _make_private_dir(self.path.parent)
        doc: dict[str, Any] = {"format": FORMAT, "version": VERSION}
        if self._passphrase:
            salt = os.urandom(16)
            doc.update(kdf="scrypt", salt=base64.b64encode(salt).decode(), n=self._scrypt_n,
                       r=SCRYPT_R, p=SCRYPT_P)
            fernet = Fernet(self._derive(salt, self._scrypt_n, SCRYPT_R, SCRYPT_P))
        else:
            doc["kdf"] = "keyfile"
            fernet = Fernet(self._keyfile_key(create=True))
        clear = json.dumps(tokens.to_json()).encode()
        doc["data"] = fernet.encrypt(clear).decode("ascii")
        _atomic_write(self.path, json.dumps(doc, indent=1).encode() + b"\n")

    def clear(self) -> None:
        """Forget the session (the key file stays for the next login)."""
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass

    # -- helpers

    def _parse(self, raw: bytes) -> dict[str, Any]:
        try:
            doc = json.loads(raw)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or doc.get("format") != FORMAT or "data" not in doc:
            raise VaultError(f"{self.path}: not a tablesync token store (corrupt?)",
                             hint="delete it and run `tablesync login`")
        if doc.get("version") != VERSION:
            raise VaultError(f"{self.path}: unsupported token store version {doc.get('version')!r}")
        return doc

    def _fernet_for(self, doc: dict[str, Any]) -> Fernet:
        kdf = doc.get("kdf")
        if kdf == "keyfile":
            return Fernet(self._keyfile_key(create=False))
        if kdf != "scrypt":
            raise VaultError(f"{self.path}: unknown key derivation {kdf!r}")
        if not self._passphrase:
            raise VaultError(f"{self.path}: the token store is protected by a passphrase",
                             hint=f"set {PASSPHRASE_ENV}")
        try:
            salt = base64.b64decode(str(doc["salt"]), validate=True)
            n, r, p = int(doc["n"]), int(doc["r"]), int(doc["p"])
        except (KeyError, ValueError, TypeError) as exc:
            raise VaultError(f"{self.path}: corrupt scrypt parameters",
                             hint="delete it and run `tablesync login`") from exc
        return Fernet(self._derive(salt, n, r, p))

    def _derive(self, salt: bytes, n: int, r: int, p: int) -> bytes:
        assert self._passphrase is not None
        if not (2 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 32 and 1 <= p <= 16):
            raise VaultError(f"{self.path}: implausible scrypt parameters n={n} r={r} p={p}")
        try:
            key = Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(
                self._passphrase.reveal().encode("utf-8"))
        except (InvalidKey, ValueError, MemoryError) as exc:
            raise VaultError(f"{self.path}: key derivation failed: {exc}") from exc
        return base64.urlsafe_b64encode(key)

    def _keyfile_key(self, *, create: bool) -> bytes:
        kp = self.key_path
        try:
            data = kp.read_bytes().strip()
        except FileNotFoundError as exc:
            if not create:
                raise VaultError(f"{kp}: key file is missing, the token store cannot be read",
                                 hint="run `tablesync login` to sign in again") from exc
            data = Fernet.generate_key()
            _atomic_write(kp, data + b"\n", exclusive=True)
            return data
        except OSError as exc:
            raise VaultError(f"{kp}: cannot read the key file: {exc.strerror}") from exc
        _check_private(kp)
        try:
            Fernet(data)
        except ValueError as exc:
            raise VaultError(f"{kp}: key file is corrupt",
                             hint="delete it and the token file, then `tablesync login`") from exc
        return data

    def _wrong_key_message(self, doc: dict[str, Any]) -> str:
        if doc.get("kdf") == "scrypt":
            return f"{self.path}: wrong passphrase ({PASSPHRASE_ENV}) or corrupt token store"
        return f"{self.path}: key file {self.key_path.name} does not match (corrupt token store?)"


def _check_private(path: Path) -> None:
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        raise VaultError(f"{path}: readable by other users (mode {mode:04o})",
                         hint=f"chmod 600 {path}")


def _make_private_dir(path: Path) -> None:
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            d.mkdir(mode=0o700)
        except FileExistsError:
            pass
        os.chmod(d, 0o700)   # mkdir's mode is filtered by the umask


def _atomic_write(path: Path, data: bytes, *, exclusive: bool = False) -> None:
    """Write ``data`` to ``path`` (0600) through a temp file and rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        if exclusive:
            os.link(tmp, path)          # fails if another process created it first
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
        _fsync_dir(path.parent)
    except FileExistsError as exc:
        tmp.unlink(missing_ok=True)
        raise VaultError(f"{path}: created concurrently by another process; retry") from exc
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise VaultError(f"{path}: cannot write: {exc.strerror}") from exc


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
