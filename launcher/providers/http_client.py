"""Thin JSON-over-HTTP with bearer auth and bounded retries, on the standard library only.

- Auth: ``Authorization: Bearer <key>`` (both RunPod's REST/GraphQL APIs and Vast.ai's API
  accept it). The key never goes into a URL, a log line or an exception message: every
  text taken from a response is scrubbed of it before it is shown.
- Retries: HTTP 429 and 500/502/503/504 and connection errors are retried with exponential
  backoff (``backoff * 2**attempt``), or exactly what ``Retry-After`` asks (seconds or an HTTP
  date) when the server sends it; each wait is capped at ``max_backoff`` and there are at
  most ``max_attempts`` tries in all.
  A request that is not idempotent (creating a rental) is retried on 429 only: a 5xx or a
  dropped connection after the request was sent may mean the rental exists, and a blind
  retry could rent twice.
- Anything else that is not 2xx raises ``ProviderError`` with the status, the provider's own
  error text and the parsed body (``ProviderError.data``). Error shapes understood: RunPod v2's
  problem details ``{"title", "status", "detail", "errors": [...]}`` (docs.runpod.io, REST v2
  "Reading a 422"), Vast's ``{"success": false, "error": code, "msg": text}``, GraphQL's
  ``{"errors": [{"message"}]}``, and plain text (Vast answers 429 in plain text, with no
  Retry-After, so the exponential backoff applies).
- A create whose request was sent but whose answer never came (dropped connection, timeout,
  garbled status line) raises ``TransientProviderError`` with ``status`` None: the caller treats
  that, and any 5xx/408 (``ProviderError.may_have_created``), as "the rental may exist".
"""
from __future__ import annotations

import email.utils
import http.client
import json
import logging
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any, Callable, Optional

from launcher.providers.base import ProviderError, TransientProviderError

log = logging.getLogger("launcher.providers.http")

RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
USER_AGENT = "llm-box-launcher/0.1"


@dataclass
class Response:
    status: int
    data: Any            # parsed JSON, or None for an empty body
    text: str            # the raw body (scrubbed), for messages


def _retry_after_seconds(value: Optional[str]) -> Optional[float]:
    """``Retry-After`` as seconds: either delta-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


def error_text(data: Any, fallback: str) -> str:
    """The provider's own error message from a JSON body, else the raw text (shortened)."""
    if isinstance(data, dict) and isinstance(data.get("title"), str) and "status" in data:
        # RFC 9457 problem details (RunPod v2): title, detail and every validation error, which
        # name the offending field ("$: additional properties 'x' not allowed")
        parts = [data["title"]] + [data[k] for k in ("detail",) if isinstance(data.get(k), str)]
        for item in data.get("errors") or []:
            parts.append(item if isinstance(item, str) else str(item.get("message") or item.get("detail") or item)
                         if isinstance(item, dict) else str(item))
        return ": ".join(parts[:2]) + ("" if len(parts) <= 2 else " (" + "; ".join(parts[2:]) + ")")
    if isinstance(data, dict):
        texts = [data.get(k) for k in ("message", "msg", "detail", "error")]
        texts = [t for t in texts if isinstance(t, str) and t]
        if texts:  # Vast pairs a code ("error": "no_such_ask") with a sentence ("msg": ...)
            code = data.get("error")
            if isinstance(code, str) and code and code != texts[0]:
                return f"{texts[0]} [{code}]"
            return texts[0]
        errors = data.get("errors")
        if isinstance(errors, list) and errors:
            parts = [e.get("message", str(e)) if isinstance(e, dict) else str(e) for e in errors]
            return "; ".join(parts)
    text = fallback.strip()
    return text[:500] + ("..." if len(text) > 500 else "")


class JsonHttpClient:
    """One API base URL and one key; ``request`` returns parsed JSON or raises ``ProviderError``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        provider: str,
        *,
        timeout: float = 30.0,
        max_attempts: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 30.0,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.base_url = base_url.rstrip("/")
        self._api_key = api_key
        self.provider = provider
        self.timeout = timeout
        self.max_attempts = max(1, max_attempts)
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._sleep = sleep

    def __repr__(self) -> str:  # never show the key
        return f"JsonHttpClient({self.base_url!r}, provider={self.provider!r})"

    def scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _url(self, path: str) -> str:
        if path.startswith("http://") or path.startswith("https://"):
            return path
        if not path:
            return self.base_url  # e.g. the GraphQL endpoint itself
        return f"{self.base_url}/{path.lstrip('/')}"

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        idempotent: Optional[bool] = None,
        allow_statuses: tuple[int, ...] = (),
    ) -> Response:
        """Send one JSON request; retry as the module docstring says.

        ``allow_statuses``: non-2xx statuses returned to the caller instead of raising (e.g. 404
        when asking whether an instance still exists). ``idempotent`` defaults to True for
        GET/PUT/DELETE and False for POST.
        """
        if idempotent is None:
            idempotent = method.upper() != "POST"
        url = self._url(path)
        payload = None if body is None else json.dumps(body).encode("utf-8")
        headers = {
            "Authorization": f"Bearer {self._api_key}",
            "Accept": "application/json",
            "User-Agent": USER_AGENT,
        }
        if payload is not None:
            headers["Content-Type"] = "application/json"
        what = f"{self.provider} {method.upper()} {path}"
        last_problem = ""
        for attempt in range(self.max_attempts):
            retry_after: Optional[float] = None
            request = urllib.request.Request(url, data=payload, method=method.upper(), headers=headers)
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    return self._parse(reply.status, reply.read())
            except urllib.error.HTTPError as err:
                raw = err.read() if err.fp is not None else b""
                parsed = self._parse(err.code, raw, strict=False)
                if err.code in allow_statuses:
                    return parsed
                message = error_text(parsed.data, parsed.text) or err.reason
                last_problem = f"HTTP {err.code}: {message}"
                retryable = err.code == 429 or (idempotent and err.code in RETRY_STATUSES)
                if not retryable:
                    raise ProviderError(f"{what} failed with {last_problem}", status=err.code, data=parsed.data) from None
                retry_after = _retry_after_seconds(err.headers.get("Retry-After") if err.headers else None)
                status: Optional[int] = err.code
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError, http.client.HTTPException) as err:
                reason = getattr(err, "reason", err)
                last_problem = f"connection error: {self.scrub(str(reason))}"
                if not idempotent:
                    raise TransientProviderError(
                        f"{what} failed with {last_problem}; the request may or may not have reached {self.provider}"
                    ) from None
                status = None
            if attempt + 1 >= self.max_attempts:
                break
            delay = self.backoff * (2 ** attempt) if retry_after is None else retry_after
            delay = min(self.max_backoff, delay)
            log.info("%s: %s; retrying in %.1fs (attempt %d/%d)", what, last_problem, delay, attempt + 2, self.max_attempts)
            self._sleep(delay)
        raise TransientProviderError(
            f"{what} still failing after {self.max_attempts} attempts ({last_problem})", status=status
        )

    def _parse(self, status: int, raw: bytes, strict: bool = True) -> Response:
        text = self.scrub(raw.decode("utf-8", errors="replace"))
        if not text.strip():
            return Response(status, None, "")
        try:
            data = json.loads(text)
        except ValueError:
            if strict:
                raise ProviderError(
                    f"{self.provider} answered HTTP {status} with a body that is not JSON: {text[:200]!r}", status=status
                ) from None
            data = None
        return Response(status, data, text)
