"""Value sources: where an event's ID, type or ordering key comes from.

An expression is one of

- ``header:NAME``          a request header (case-insensitive)
- ``json:dotted.path``     a field of the JSON body; digits index arrays (``json:events.0.id``)
- ``form:NAME``            a field of an ``application/x-www-form-urlencoded`` body
- ``query:NAME``           a query-string parameter
- ``body_sha256``          the hex SHA-256 of the raw body
- ``event_sha256``         the hex SHA-256 of the body without the parts a scheme names as the
                           delivery's own (Mailgun's ``signature``, Linear's
                           ``webhookTimestamp``): the same for every retry of one event even
                           when the provider signs it again; ``body_sha256`` for other schemes
- ``form_sha256``          the hex SHA-256 of what a Twilio signature covers past the endpoint's
                           own URL: the query string, then the body's form parameters sorted as
                           Twilio signs them (the raw body when the query carries bodySHA256)
- a template               ``"{header:X-Hook}:{json:id}"``; a part ending in ``?``
                           (``{header:X-Hook?}``) may be absent and then reads as empty
- alternatives             ``"header:Idempotency-Key || body_sha256"``: the first one that
                           yields a value (for a field only some senders or versions send)

Parsing happens once, at config load; extraction is cheap and never raises for bad input:
a missing or non-scalar value extracts as ``None``.
"""

from __future__ import annotations

__all__ = [
    "MAX_FORM_FIELDS",
    "Document",
    "SourceSyntaxError",
    "ValueSource",
    "form_signing_text",
    "headers_read",
    "body_sha256_param",
    "parse_source",
    "reject_constant",
    "signed_form_params",
    "signed_url",
]

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode

import orjson

from receiver.models import InboundRequest

_MISSING = object()
T = TypeVar("T")


class SourceSyntaxError(ValueError):
    """The expression is not one of the forms above."""


class Document:
    """The request plus its body parsed lazily, once, as JSON or a form.

    JSON is parsed twice over at most: :attr:`json` with orjson (fast; a number with a fraction
    or exponent, or an integer beyond 64 bits, is a float there), and :attr:`exact_json` with
    every number exact, only when a value read for a key turns out to be such a float.
    """

    __slots__ = (
        "_event_sha256",
        "_exact",
        "_form",
        "_json",
        "body",
        "delivery_fields",
        "json_problem",
        "request",
        "url",
    )

    def __init__(
        self,
        request: InboundRequest,
        json_value: object = _MISSING,
        body: bytes | None = None,
        url: str | None = None,
        delivery_fields: frozenset[str] = frozenset(),
    ) -> None:
        self.request = request
        # Top-level JSON members or form fields that belong to the delivery, not the event.
        self.delivery_fields = delivery_fields
        self._event_sha256: str | None = None
        # The event's own bytes: the request body, or one element's bytes in a batch.
        self.body = request.body if body is None else body
        # The URL the provider signed (see signed_url): the request's own without public_url.
        self.url = request.url if url is None else url
        self._json = json_value
        self._exact = json_value
        # Why a body that is JSON by its syntax could not be read (too deep, a number too
        # large), in words for the caller; None when it is read or is not JSON at all.
        self.json_problem: str | None = None
        self._form: dict[str, list[str]] | None = None

    @property
    def json(self) -> object:
        """The parsed JSON body, or ``None`` when the body is not JSON."""
        if self._json is _MISSING:
            try:
                self._json = orjson.loads(self.request.body)
            except orjson.JSONDecodeError:
                # orjson refuses a few bodies the exact parser takes (a lone surrogate escape):
                # that one decides what is JSON, so both always agree.
                self._json = self.exact_json
        return self._json

    @property
    def exact_json(self) -> object:
        """The parsed JSON body with every number exact (``Decimal``, big integers whole)."""
        if self._exact is _MISSING:
            try:
                self._exact = _read_exact(_DECODER.decode, self.request.body.decode("utf-8"))
            except UnreadableJson as exc:
                self._exact, self.json_problem = None, str(exc)
            except ValueError:
                self._exact = None
        return self._exact

    @property
    def form(self) -> dict[str, list[str]]:
        if self._form is None:
            try:
                text = self.request.body.decode("utf-8")
                self._form = parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)
            except (UnicodeDecodeError, ValueError):
                self._form = {}
        return self._form

    @property
    def event_sha256(self) -> str:
        """The hex SHA-256 of the event without its delivery fields: of the remaining JSON
        members (written one way: sorted, compact, numbers as sent) or form fields (sorted,
        encoded), or of the raw body when it is neither (or a form without them, or a scheme
        names none). Two retries of one event that differ only in those agree."""
        if self._event_sha256 is None:
            self._event_sha256 = hashlib.sha256(self._event_bytes()).hexdigest()
        return self._event_sha256

    def _event_bytes(self) -> bytes:
        fields = self.delivery_fields
        if not fields:
            return self.body
        value = self.json
        if isinstance(value, dict):
            # Written again even when none is present, so a first delivery without them and a
            # retry with them agree; from the exact parse, so 2**70 and 2**70 + 1 stay two.
            exact = self.exact_json
            if not isinstance(exact, dict):
                return self.body
            try:
                text = _canonical({k: v for k, v in exact.items() if k not in fields})
            except RecursionError:  # too deep to write again: the whole body
                return self.body
            return text.encode("utf-8", "surrogatepass")
        form = self.form if value is None else {}
        if fields.isdisjoint(form):
            return self.body
        kept_fields = sorted((k, v) for k, v in form.items() if k not in fields)
        return urlencode(kept_fields, doseq=True).encode()


def _canonical(value: object) -> str:
    """JSON text of an exact parse, one way for one value: keys sorted, no spaces, numbers as
    sent (a ``Decimal`` stays a number, never the string it would be for ``json.dumps``)."""
    if isinstance(value, dict):
        members = (f"{json.dumps(k, ensure_ascii=False)}:{_canonical(v)}" for k, v in value.items())
        return "{" + ",".join(sorted(members)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_canonical(v) for v in value) + "]"
    if isinstance(value, Decimal):
        return str(value)
    return json.dumps(value, ensure_ascii=False)  # str, int, bool, None


Extractor = Callable[[Document], str | None]


def reject_constant(name: str) -> object:
    """For ``parse_constant``: NaN and Infinity are not JSON (and two different ones must
    never become one key)."""
    raise ValueError(f"{name} is not a JSON value")


class UnreadableJson(ValueError):
    """JSON by its syntax that this receiver cannot read (nested past the parser's depth, a
    number out of ``Decimal``'s range, an integer of more digits than Python converts): the
    body is refused, never a 500, with these words."""


def _exact_float(text: str) -> Decimal:
    try:
        return Decimal(text)
    except ArithmeticError:  # decimal.InvalidOperation: the exponent is out of range
        raise UnreadableJson(
            f"its JSON holds a number out of the range that can be read: {text[:20]}…"
        ) from None


def _read_exact(decode: Callable[..., T], *args: Any) -> T:
    """``decode(*args)`` with the exact decoder; what it cannot read as :class:`UnreadableJson`.
    (Integers are left to the decoder's own C conversion: a hook for them doubled the time
    of an integer-heavy batch, to say what this says from the error.)"""
    try:
        return decode(*args)
    except RecursionError:
        raise UnreadableJson("its JSON nests too deeply to be read") from None
    except ValueError as exc:
        if "integer string conversion" in str(exc):  # past sys.get_int_max_str_digits()
            raise UnreadableJson("its JSON holds an integer of too many digits to read") from None
        raise


# Built once: json.loads with options builds a new decoder on every call. Floats stay exact.
_DECODER = json.JSONDecoder(parse_float=_exact_float, parse_constant=reject_constant)


def _scalar(value: object) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str):
        return value or None
    if isinstance(value, int | Decimal):  # never a float: those are read again, exactly
        return str(value)
    return None


_JSON_SPACE = " \t\n\r"


def json_array_items(body: bytes, *, limit: int) -> list[tuple[object, bytes]] | None:
    """The elements of a JSON array body, each parsed exactly and with its own bytes as sent;
    None when the body is not one JSON array. :class:`UnreadableJson` says why one that is
    could not be read. Past ``limit`` elements it stops: ``limit + 1`` of them say "too
    many", the rest unread."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return None
    end = len(text)

    def skip_space(pos: int) -> int:
        while pos < end and text[pos] in _JSON_SPACE:
            pos += 1
        return pos

    pos = skip_space(0)
    if not text.startswith("[", pos):
        return None
    items: list[tuple[object, bytes]] = []
    pos = skip_space(pos + 1)
    if text.startswith("]", pos):
        return items if skip_space(pos + 1) == end else None
    try:
        while True:
            value, stop = _read_exact(_DECODER.raw_decode, text, pos)
            items.append((value, text[pos:stop].encode("utf-8")))
            if len(items) > limit:
                return items
            pos = skip_space(stop)
            if text.startswith(",", pos):
                pos = skip_space(pos + 1)
            elif text.startswith("]", pos):
                return items if skip_space(pos + 1) == end else None
            else:
                return None
    except UnreadableJson:
        raise
    except ValueError:
        return None


def _json_path(path: str) -> Extractor:
    parts = path.split(".")
    if not path or any(not p for p in parts):
        raise SourceSyntaxError(f"json path {path!r} has an empty segment")

    def extract(doc: Document) -> str | None:
        value = _walk(doc.json, parts)
        if isinstance(value, float):  # as orjson rounded it: read the number as it was sent
            value = _walk(doc.exact_json, parts)
        return _scalar(value)

    return extract


def _walk(node: object, parts: list[str]) -> object:
    for part in parts:
        if isinstance(node, Mapping):
            node = node.get(part, _MISSING)
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
        if node is _MISSING:
            return None
    return node


def _header(name: str) -> Extractor:
    lowered = name.lower()
    return lambda doc: doc.request.headers.get(lowered) or None


def _form(name: str) -> Extractor:
    def extract(doc: Document) -> str | None:
        values = doc.form.get(name)
        return values[0] if values and values[0] else None

    return extract


def _query(name: str) -> Extractor:
    return lambda doc: doc.request.query.get(name) or None


# A form body's most fields. Parsing and sorting them is work done before a URL-signing
# scheme (Twilio) can check the signature: 10 000 empty fields (a 59 KB body) cost 15 ms of the
# event loop per unsigned request. Twilio's callbacks carry a few dozen.
MAX_FORM_FIELDS = 1_000


def _body_sha256(doc: Document) -> str:
    return hashlib.sha256(doc.body).hexdigest()


def _event_sha256(doc: Document) -> str:
    return doc.event_sha256


def _form_sha256(doc: Document) -> str:
    """SHA-256 of what a Twilio signature covers after the endpoint's own URL: the query string
    as sent, then the body's form parameters as Twilio signs them (names sorted, each name's
    distinct values sorted, concatenated). Any order, encoding or repetition of the same
    parameters (which one signature covers alike) is one event, whatever Content-Type claims;
    the same parameters sent to another query string are another. With ``bodySHA256`` in the
    query (Twilio's JSON mode, where the URL binds the body): the query string and raw body."""
    query = doc.url.partition("?")[2]
    signed_query = f"?{query}".encode() if query else b""
    if body_sha256_param(query) is None:
        try:
            signed = form_signing_text(signed_form_params(doc.request.body))
            return hashlib.sha256(
                signed_query + signed.encode("utf-8", "surrogatepass")
            ).hexdigest()
        except ValueError:  # too many fields: refused by the signature check anyway
            pass
    return hashlib.sha256(signed_query + doc.request.body).hexdigest()


def body_sha256_param(query: str) -> str | None:
    """Twilio's JSON mode: the ``bodySHA256`` its (signed) query string carries, binding the
    body through the URL; None for a form delivery."""
    values = parse_qs(query.partition("#")[0]).get("bodySHA256")
    return values[0] if values else None


def signed_form_params(body: bytes) -> dict[str, list[str]]:
    """A form body's parameters as Twilio's signature reads them, whatever Content-Type says
    (decoded as UTF-8 with replacement). ValueError past 1 000 fields, before any is read."""
    text = body.decode("utf-8", "replace")
    return parse_qs(text, keep_blank_values=True, max_num_fields=MAX_FORM_FIELDS)


def signed_url(public_url: str | None, request_url: str) -> str:
    """The URL a URL-signing provider (Twilio) signed: its configured ``public_url`` (plus the
    request's query string when that has none of its own), else the URL of the request. A
    request's own query string does not count when ``public_url`` fixes one."""
    if not public_url:
        return request_url
    if "?" in public_url:
        return public_url
    _, sep, query = request_url.partition("?")
    return f"{public_url}?{query}" if sep and query else public_url


def form_signing_text(params: Mapping[str, list[str]]) -> str:
    """Form parameters as Twilio signs them (after the URL): names sorted, each name's distinct
    values sorted, all concatenated. Shared with the Twilio verifier, so a key is always
    exactly what a signature covers."""
    return "".join(name + value for name in sorted(params) for value in sorted(set(params[name])))


_KINDS: dict[str, Callable[[str], Extractor]] = {
    "header": _header,
    "json": _json_path,
    "form": _form,
    "query": _query,
}
_TEMPLATE_PART = re.compile(r"\{([^{}]*)\}")


def _simple(expr: str) -> Extractor:
    if expr == "body_sha256":
        return _body_sha256
    if expr == "form_sha256":
        return _form_sha256
    if expr == "event_sha256":
        return _event_sha256
    kind, sep, arg = expr.partition(":")
    if not sep or kind not in _KINDS:
        raise SourceSyntaxError(
            f"{expr!r} is not header:NAME, json:PATH, form:NAME, query:NAME, body_sha256, "
            "event_sha256, form_sha256 or a {…} template"
        )
    if not arg:
        raise SourceSyntaxError(f"{expr!r} names no {kind}")
    return _KINDS[kind](arg)


def _template(expr: str) -> Extractor:
    pieces: list[str | tuple[Extractor, bool]] = []
    pos = 0
    for match in _TEMPLATE_PART.finditer(expr):
        if match.start() > pos:
            pieces.append(expr[pos : match.start()])
        inner = match.group(1)
        is_optional = inner.endswith("?")
        pieces.append((_simple(inner.removesuffix("?")), is_optional))
        pos = match.end()
    rest = expr[pos:]
    if "{" in rest or "}" in rest:
        raise SourceSyntaxError(f"template {expr!r} has an unbalanced brace")
    if rest:
        pieces.append(rest)
    if not any(isinstance(p, tuple) and not p[1] for p in pieces):
        raise SourceSyntaxError(f"template {expr!r} has no required {{…}} part")

    def extract(doc: Document) -> str | None:
        out: list[str] = []
        for piece in pieces:
            if isinstance(piece, str):
                out.append(piece)
                continue
            fn, is_optional = piece
            value = fn(doc)
            if value is None and not is_optional:
                return None
            out.append(value or "")
        return "".join(out)

    return extract


@dataclass(frozen=True, slots=True)
class ValueSource:
    """A parsed expression; call ``extract`` on a :class:`Document`."""

    expression: str
    extract: Extractor


def _alternatives(extractors: list[Extractor]) -> Extractor:
    def extract(doc: Document) -> str | None:
        for fn in extractors:
            value = fn(doc)
            if value is not None:
                return value
        return None

    return extract


def _one(expr: str) -> Extractor:
    if not expr:
        raise SourceSyntaxError("an alternative of an || expression is empty")
    return _template(expr) if "{" in expr else _simple(expr)


def headers_read(expr: str) -> frozenset[str]:
    """The header names (as written) a valid expression reads, in any of its alternatives."""
    names: set[str] = set()
    for part in (p.strip() for p in expr.split("||")):
        simple = [m.group(1).removesuffix("?") for m in _TEMPLATE_PART.finditer(part)]
        for source in simple if "{" in part else [part]:
            kind, _, arg = source.partition(":")
            if kind == "header" and arg:
                names.add(arg)
    return frozenset(names)


def parse_source(expr: str) -> ValueSource:
    expr = expr.strip()
    if not expr:
        raise SourceSyntaxError("empty expression")
    parts = [part.strip() for part in expr.split("||")]
    fn = _one(parts[0]) if len(parts) == 1 else _alternatives([_one(p) for p in parts])
    return ValueSource(expression=expr, extract=fn)
