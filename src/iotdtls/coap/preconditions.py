"""The request preconditions of RFC 7252 §5.10.8, If-Match and If-None-Match, for a site's
own resources to evaluate: aiocoap (0.4.17) hands both to the resource
(`request.opt.if_match`, `request.opt.if_none_match`) and evaluates neither, and its `Resource`
performs the method whatever they say (a PUT with an If-Match no ETag matched got 2.04 and
changed the demo's `/temp`, probe CB). The coaps server recognizes both critical options
(`iotdtls.coap.options.RECOGNIZED`) on the word that the resource evaluates them: a resource
that does not performs methods a client asked for only on a condition.

`precondition_failed` evaluates them against what a resource says of itself;
`EvaluatesPreconditions` does so for an aiocoap `Resource` before each method it has (the demo
site's resources are such).
"""

from __future__ import annotations

from aiocoap import resource
from aiocoap.message import Message
from aiocoap.numbers.codes import Code

__all__ = ["EvaluatesPreconditions", "precondition_failed"]


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


def _failed(text: str) -> Message:
    return Message(code=Code.PRECONDITION_FAILED, payload=text.encode())


class EvaluatesPreconditions(resource.Resource):
    """An aiocoap `Resource` that evaluates If-Match and If-None-Match (`precondition_failed`)
    before each method it has a `render_<method>` for, against `has_representation` and
    `current_etag` (override them: by default a representation exists, without an ETag). A
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
            if failed is not None:
                failed.opt.no_response = request.opt.no_response  # as aiocoap's render does
                return failed
        return await super().render(request)
