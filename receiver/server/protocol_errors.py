"""A request aiohttp's HTTP parser refuses (a malformed head, a line too long, broken framing) is
answered in the receiver's JSON error shape, like every other refusal, instead of aiohttp's
plain text, which also echoed up to 100 bytes of the offending line (a signature header, say)
back to whoever sent it. The log line and the count are ``protocol_log``'s, as before."""

from __future__ import annotations

__all__ = ["JsonErrorHandler"]

from aiohttp import http_exceptions as http
from aiohttp import web
from aiohttp.web_request import BaseRequest

from receiver.errors import MalformedRequest
from receiver.server.responses import error_response

# Most specific first: each is a kind of the ones after it.
_WHY: tuple[tuple[type[http.HttpProcessingError], str], ...] = (
    (http.LineTooLong, "a line of the request head is longer than the server takes"),
    (http.BadHttpMethod, "the method is not a valid HTTP method"),
    (http.InvalidURLError, "the request target is not a valid URL path"),
    (http.BadStatusLine, "the request line is malformed"),
    (http.InvalidHeader, "a header line is malformed"),
    (http.ContentLengthError, "the body ended before its Content-Length"),
    (http.TransferEncodingError, "the chunked body is malformed"),
    (http.PayloadEncodingError, "the body's encoding is malformed"),
)


def _why(exc: http.HttpProcessingError) -> str:
    for kind, words in _WHY:
        if isinstance(exc, kind):
            return words
    return "the request head is malformed"


class JsonErrorHandler(web.RequestHandler):
    """aiohttp's connection handler, answering a request its parser refused in JSON."""

    __slots__ = ()  # the same layout: a handler aiohttp made becomes this kind in place

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        # aiohttp's own first: it logs the error, and refuses when an answer has begun.
        response = super().handle_error(request, status, exc, message)
        if not isinstance(exc, http.HttpProcessingError) or not 400 <= status < 500:
            return response
        answer = error_response(MalformedRequest(f"the request is not valid HTTP: {_why(exc)}"))
        answer.force_close()  # the parser cannot tell where a next request would start
        return answer
