"""The engine's :class:`~tablesync.machine.Authenticate` instruction carried out: sign in
or refresh through the :class:`~tablesync.session.Session`, claim the system id on a fresh
sign-in, and turn every failure into the :class:`~tablesync.machine.AuthFailed` the machine
expects, noting it with its cause (:mod:`tablesync.causes`)."""

from __future__ import annotations

from typing import Callable

from tablesync.causes import Cause, classify
from tablesync.errors import (AuthError, DuplicateReplicaError, PayloadError, RemoteError,
                              StoreError, TablesyncError, TransientRemoteError)
from tablesync.machine import (AUTH_DEAD, AUTH_DUPLICATE, AUTH_REJECTED, AUTH_TRANSIENT,
                               AuthFailed, AuthOk, Event)
from tablesync.remote.base import DeadSessionError
from tablesync.replica import ReplicaClaim
from tablesync.session import Session

__all__ = ["authenticate"]

Note = Callable[[str, Cause], None]


def authenticate(session: Session, claim: ReplicaClaim, *, refresh: bool,
                 note: Note) -> Event:
    """Sign in (``refresh`` False: stored tokens or a password sign-in, then the claim on
    the system id) or rotate the tokens; ``note(message, cause)`` gets every failure."""
    try:
        tokens = session.refresh() if refresh else session.ensure()
    except TransientRemoteError as exc:
        note(str(exc), classify(exc))
        return AuthFailed(AUTH_TRANSIENT, exc.retry_after, unreachable=exc.status is None)
    except DeadSessionError as exc:
        note(str(exc), classify(exc))
        return AuthFailed(AUTH_DEAD)
    except (AuthError, PayloadError, RemoteError, StoreError, TablesyncError) as exc:
        note(str(exc), classify(exc))
        transient = isinstance(exc, PayloadError) or (
            isinstance(exc, RemoteError) and not isinstance(exc, AuthError)
            and (exc.status or 500) >= 500)
        return AuthFailed(AUTH_TRANSIENT if transient else AUTH_REJECTED)
    if not refresh:
        try:
            claim.claim()
        except DuplicateReplicaError as exc:
            note(str(exc), classify(exc))
            return AuthFailed(AUTH_DUPLICATE, detail=str(exc))
        except TransientRemoteError as exc:
            note(str(exc), classify(exc))
            return AuthFailed(AUTH_TRANSIENT, exc.retry_after, unreachable=exc.status is None)
        except RemoteError as exc:
            note(str(exc), classify(exc))
            return AuthFailed(AUTH_TRANSIENT)
    return AuthOk(max(1.0, tokens.expires_in(session.clock())))
