"""Password hashing with the standard library's scrypt (``$scrypt$n,r,p$salt$hash``)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

_N, _R, _P = 2**14, 8, 1


def hash_password(password: str) -> str:
    """A salted scrypt hash of ``password``."""
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=_N, r=_R, p=_P, dklen=32)
    return "$scrypt${},{},{}${}${}".format(
        _N, _R, _P, base64.b64encode(salt).decode(), base64.b64encode(digest).decode())


def verify_password(password: str, stored: str | None) -> bool:
    """True iff ``password`` matches ``stored`` (False for unknown formats)."""
    if not stored or not stored.startswith("$scrypt$"):
        return False
    try:
        _, _, params, salt_b64, digest_b64 = stored.split("$")
        n, r, p = (int(x) for x in params.split(","))
        salt, digest = base64.b64decode(salt_b64), base64.b64decode(digest_b64)
    except ValueError:
        return False
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=len(digest))
    return hmac.compare_digest(got, digest)
