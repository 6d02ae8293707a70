"""The request preconditions of RFC 7252 §5.10.8, If-Match and If-None-Match, for a site's
own resources to evaluate: aiocoap (0.4.17) hands both to the resource
(`request.opt.if_match`, `request.opt.if_none_match`) and evaluates neither, and its `Resource`
performs the method whatever they say (a PUT with an If-Match no ETag matched got 2.04 and
changed the demo's `/temp`, probe CB). The coaps server recognizes both critical options
(`iotdtls.coap.options.RECOGNIZED`) on the word that the resource evaluates them: a resource
that does not performs methods a client asked for only on a condition.

`precondition_failed` evaluates them against what a resource says of itself;
`EvaluatesPreconditions` does so for an aiocoap `Resource` before each method it has (the demo
site's resources are such), and answers a GET whose Accept names another Content-Format than
the resource's one with 4.06 Not Acceptable (`not_acceptable`, RFC 7252 §5.10.4; Accept too is
a critical option aiocoap hands on and a plain resource ignored: 2.05 text/plain to a client
that asked for JSON, probe CC).
"""

from __future__ import annotations

from aiocoap import resource
from aiocoap.message import Message
from aiocoap.numbers.codes import Code

__all__ = ["EvaluatesPreconditions", "not_acceptable", "precondition_failed"]


def precondition_failed(request: Message, exists: bool, etag: bytes | None) -> Message | None:
    """4.12 Precondition Failed for `request` when its If-Match or If-None-Match is not
    fulfilled by the target resource, whose current representation `exists` with the ETag
    `etag` (None: it has none, RFC 7252 §5.10.6); None when the method may be performed.

    If-Match (§5.10.8.1) is fulfilled when one of its values is the current ETag, or is empty
    and a representation exists; If-None-Match (§5.10.8.2) when the resource does not exist.
    Otherwise the server MUST NOT perform the method and answers 4.12, here with a
    diagnostic payload (§5.5.2)."""
    if request.opt.if_match and not _if_match_fulfilled(request.opt.if_match, exists, etag):
        return _failed("If-Match: no current representation matches")
    if request.opt.if_none_match and exists:
        return _failed("If-None-Match: the resource exists")
    return None


def _if_match_fulfilled(values: tuple[bytes, ...], exists: bool, etag: bytes | None) -> bool:
    """RFC 7252 §5.10.8.1: an empty value matches any existing representation, another value
    the representation whose ETag it is."""
    return exists and any(value == b"" or value == etag for value in values)


def not_acceptable(request: Message, content_format: int | None) -> Message | None:
    """4.06 Not Acceptable for a GET of a resource whose one representation has
    `content_format` when the request's Accept names another (RFC 7252 §5.10.4: "If the
    preferred Content-Format cannot be returned, then a 4.06 'Not Acceptable' MUST be sent");
    None when it may be served, or when the resource names no single format (None)."""
    accept = request.opt.accept
    if request.code != Code.GET or accept is None or content_format is None:
        return None
    if int(accept) == content_format:
        return None
    return _failed(f"Accept: only Content-Format {content_format}", Code.NOT_ACCEPTABLE)


def _failed(text: str, code: Code = Code.PRECONDITION_FAILED) -> Message:
    return Message(code=code, payload=text.encode())


class EvaluatesPreconditions(resource.Resource):
    """An aiocoap `Resource` that evaluates If-Match and If-None-Match (`precondition_failed`)
    before each method it has a `render_<method>` for, against `has_representation` and
    `current_etag` (override them: by default a representation exists, without an ETag), and
    a GET's Accept against its `ct` when that is one Content-Format (`not_acceptable`). A
    method it does not have stays aiocoap's 4.05 Method Not Allowed."""

    def has_representation(self) -> bool:
        """Whether the resource has a current representation (RFC 7252 §5.10.8)."""
        return True

    def current_etag(self) -> bytes | None:
        """The ETag of the current representation (RFC 7252 §5.10.6), None for none."""
        return None

    async def render(self, request: Message) -> Message:
        if callable(getattr(self, f"render_{str(request.code).lower()}", None)):
            failed = precondition_failed(request, self.has_representation(), self.current_etag())
            if failed is None:
                ct = getattr(self, "ct", None)
                failed = not_acceptable(request, ct if isinstance(ct, int) else None)
            if failed is not None:
                failed.opt.no_response = request.opt.no_response  # as aiocoap's render does
                return failed
        return await super().render(request)
