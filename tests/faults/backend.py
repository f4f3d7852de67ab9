"""Drive the devserver's fault hooks over HTTP (``POST/DELETE /_devserver/faults``).

Works against an in-process ``DevServer(enable_faults=True)`` or any devserver reachable on
loopback; needs the service-role key. In-process tests may also use ``server.faults``.
"""

from __future__ import annotations

from typing import Any

import httpx

PATH = "/_devserver/faults"


class BackendFaults:
    """Make the backend answer 429/5xx on command, and recover when told."""

    def __init__(self, url: str, service_key: str, *, timeout: float = 5.0) -> None:
        self._http = httpx.Client(base_url=url, timeout=timeout, headers={
            "apikey": service_key, "Authorization": f"Bearer {service_key}"})

    def fail(self, status: int, *, count: int | None = 1, retry_after: float | None = None,
             surface: str = "rest", path_prefix: str = "") -> None:
        """The next ``count`` matching requests (None = all until ``clear``) get ``status``."""
        body: dict[str, Any] = {"surface": surface, "status": status, "count": count,
                                "path_prefix": path_prefix}
        if retry_after is not None:
            body["retry_after"] = retry_after
        resp = self._http.post(PATH, json=body)
        if resp.status_code != 201:
            raise RuntimeError(f"devserver refused the fault ({resp.status_code}): {resp.text}")

    def clear(self) -> None:
        """Drop every pending fault: the backend answers normally again."""
        resp = self._http.delete(PATH)
        if resp.status_code != 204:
            raise RuntimeError(f"devserver did not clear faults ({resp.status_code}): {resp.text}")

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BackendFaults:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
