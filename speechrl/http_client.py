"""The stdlib HTTP client the judge and the reward service share: one POST with a timeout, and
bounded retries with exponential backoff.

A request either returns the reply's bytes or raises :class:`RetryableError` (connection refused or
reset, timeout, HTTP 429 and 5xx: worth another try) or :class:`FatalError` (other 4xx: another try
will not fix it). :func:`post_with_retries` never raises either: it returns ``(reply or None,
retries used, failure reason or None)``, after at most ``max_retries + 1`` tries, each bounded by
``timeout_s``, so a caller never hangs on a dead or slow server.
"""

from __future__ import annotations

import http.client
import time
import urllib.error
import urllib.request

__all__ = ["RetryableError", "FatalError", "post", "post_with_retries", "backoff_delay"]


class RetryableError(Exception):
    """A failure worth another try (connection, timeout, 429, 5xx); ``reason`` names it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FatalError(Exception):
    """A failure that another try will not fix (4xx other than 429)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def post(url: str, data: bytes, headers: dict[str, str], timeout_s: float) -> bytes:
    """POST ``data`` and return the reply body; ``timeout_s`` bounds the connect and each read."""
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as resp:
            return resp.read()
    except urllib.error.HTTPError as err:
        err.close()
        if err.code == 429 or err.code >= 500:
            raise RetryableError(f"http_{err.code}") from None
        raise FatalError(f"http_{err.code}") from None
    except (TimeoutError, urllib.error.URLError, OSError, http.client.HTTPException) as err:
        reason = getattr(err, "reason", err)
        kind = "timeout" if isinstance(err, TimeoutError) or isinstance(reason, TimeoutError) else "connection"
        raise RetryableError(kind) from None


def backoff_delay(retry: int, backoff_s: float, max_backoff_s: float) -> float:
    """Sleep before retry ``retry`` (0-based): ``min(max_backoff_s, backoff_s · 2**retry)``."""
    return min(max_backoff_s, backoff_s * 2 ** retry)


def post_with_retries(url: str, data: bytes, headers: dict[str, str], *, timeout_s: float, max_retries: int,
                      backoff_s: float, max_backoff_s: float) -> tuple[bytes | None, int, str | None]:
    """``(reply, retries, None)`` on success, ``(None, retries, reason)`` once the tries are spent."""
    retries = 0
    while True:
        try:
            return post(url, data, headers, timeout_s), retries, None
        except FatalError as err:
            return None, retries, err.reason
        except RetryableError as err:
            if retries >= max_retries:
                return None, retries, err.reason
            time.sleep(backoff_delay(retries, backoff_s, max_backoff_s))
            retries += 1
