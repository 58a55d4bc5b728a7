"""The ``http`` handler: POST the event's bytes to a URL, with its idempotency key."""

from __future__ import annotations

__all__ = ["HttpClient", "HttpTarget", "check_url"]

import re
from urllib.parse import urlsplit

import aiohttp

from receiver.handlers.base import ERROR_CHARS, HandlerEvent, Outcome, summarize
from receiver.settings import HttpHandler


class HttpClient:
    """The one ``aiohttp.ClientSession`` every ``http`` handler shares, opened lazily."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                # No pool limit of its own: the worker's concurrency already bounds requests.
                connector=aiohttp.TCPConnector(limit=0),
                auto_decompress=False,
                # Stateless: a cookie one downstream set (a session, a sticky backend) would
                # ride along with every later request to that host, any provider's handler's.
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()


# The most of a downstream's answer that is read (and dropped) to keep its connection for
# reuse; a longer answer closes the connection instead of filling memory.
_DRAIN_BYTES = 1024 * 1024


async def _drain(response: aiohttp.ClientResponse) -> None:
    """Read (and drop) at most ``_DRAIN_BYTES`` of the answer; a longer one, or one that
    breaks off or runs past the timeout, is dropped with its connection."""
    left = _DRAIN_BYTES
    try:
        while left > 0:
            chunk = await response.content.readany()
            if not chunk:
                return
            left -= len(chunk)
    except (aiohttp.ClientError, TimeoutError):
        pass
    response.close()


_URL = re.compile(r"""(?i)https?://[^\s'"<>]+""")


def _shown_url(match: re.Match[str]) -> str:
    """A URL found in an error text, as it may be shown (see :func:`_shown_location`)."""
    return _shown_location(match.group(0))


def _shown_location(url: str) -> str:
    """A URL as error texts may show it, absolute or relative (a redirect's ``Location``): no
    credentials, no query string or fragment (which often carry a token)."""
    try:
        parts = urlsplit(url)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "<url>"
    origin = f"{parts.scheme}://{host}" if parts.scheme else f"//{host}" if parts.netloc else ""
    return origin + parts.path


class HttpTarget:
    def __init__(self, settings: HttpHandler, client: HttpClient) -> None:
        self._settings = settings
        self._client = client
        self._timeout = aiohttp.ClientTimeout(total=settings.timeout_s)

    def _headers(self, event: HandlerEvent) -> dict[str, str]:
        headers = dict(self._settings.headers)
        headers.update(
            {
                "Content-Type": event.content_type or "application/octet-stream",
                "Idempotency-Key": event.key,
                "Receiver-Event-Id": str(event.id),
                "Receiver-Attempt": str(event.attempt),
                "Receiver-Provider": event.provider,
                "Receiver-Replay": "true" if event.is_replay else "false",
            }
        )
        if event.type is not None:
            headers["Receiver-Event-Type"] = event.type
        # The body is forwarded as it came: compressed bytes need their coding named with them.
        encoding = event.headers.get("content-encoding")
        if encoding:
            headers["Content-Encoding"] = encoding
        return headers

    async def run(self, event: HandlerEvent) -> Outcome:
        try:
            async with self._client.session().post(
                self._settings.url,
                data=event.body,
                headers=self._headers(event),
                timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                # The status is the answer; the body is only read to reuse the connection, and
                # one that comes slowly or breaks off does not undo a 2xx.
                status = response.status
                await _drain(response)
                if 200 <= status < 300:
                    return Outcome(is_success=True, http_status=status)
                error = f"HTTP {status} {response.reason or ''}".strip()
                location = response.headers.get("Location")
                if 300 <= status < 400 and location:  # redirects are not followed: say where
                    error += " to " + _shown_location(location)
                return Outcome(
                    is_success=False,
                    error=error[:ERROR_CHARS],
                    http_status=status,
                    retry_after=response.headers.get("Retry-After"),
                )
        except TimeoutError:
            return Outcome(is_success=False, error=f"timed out after {self._settings.timeout_s:g}s")
        except aiohttp.ClientError as exc:
            error = _URL.sub(_shown_url, summarize(exc))
            return Outcome(is_success=False, error=error)


def check_url(url: str) -> list[str]:
    """Problems with the URL an ``http`` handler posts to."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - parsed on access: a port out of range raises here
    except ValueError as exc:
        return [f"is not a valid URL: {exc}"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return ["must be an http:// or https:// URL with a host"]
    return []
