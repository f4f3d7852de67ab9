"""Noticing a new ``tablesync login`` while the engine waits for one: the token store file
changed (inode, size or modification time) since the engine last looked at it.

The engine arms the watch while it is signed in and, while "re-auth required", asks every
``LOGIN_POLL`` seconds whether the file changed; the first change resumes sync by itself
(no "Sync now", no restart). One ``stat`` per poll, no read or decryption.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["LOGIN_POLL", "LoginWatch"]

LOGIN_POLL = 0.5                        # seconds between looks while re-auth is required

Signature = tuple[int, int, int] | None


class LoginWatch:
    """Remembers the token store's signature; :meth:`changed` says whether it moved."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self._armed: Signature = self._signature()

    def _signature(self) -> Signature:
        if self.path is None:
            return None
        try:
            st = self.path.stat()
        except OSError:
            return None                 # no tokens (yet): a login creates the file
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def arm(self) -> None:
        """Take the current file as the one already known (called while signed in)."""
        self._armed = self._signature()

    def changed(self) -> bool:
        """The file differs from the armed one (and exists); re-arms on a change."""
        now = self._signature()
        if now is None or now == self._armed:
            return False
        self._armed = now
        return True
