"""What a coaps server answers itself to a request body too large, before aiocoap sees it.

aiocoap (0.4.17) assembles a Block1 upload (RFC 7959 §2.5) in each resource's `Block1Spool`
with no bound on its size, each block copying all those before it: one authenticated client
PUTting 64 MB in 1 KiB blocks kept a server at 100% CPU for ~100 s and took its memory from
40 to 216 MB, and a resource that takes 32 bytes at most assembled a megabyte before it could
answer 4.13. The resources are the application's; the bound is the transport's, server-wide:
a request whose body would go past `max_body_size` bytes (a block whose offset plus payload
does, or a Size1 option announcing more, RFC 7959 §4) is answered here with 4.13 Request
Entity Too Large carrying Size1 = the bound (RFC 7959 §2.9.3) and never reaches aiocoap.
"""

from __future__ import annotations

from aiocoap.message import Message
from aiocoap.numbers.codes import Code
from aiocoap.numbers.types import ACK, CON, NON

__all__ = ["DEFAULT_MAX_BODY_SIZE", "check_max_body_size", "refusal"]

#: The largest request body a coaps server takes by default, in bytes. aiocoap copies the
#: body assembled so far at each block: at 16-byte blocks (the smallest, RFC 7959 §2.2) 64 KiB
#: costs 4,096 blocks and ~128 MiB of copying (a fraction of a second); 1 MiB would cost
#: 32 GiB. Above what a constrained device posts (RFC 7925's profile); raise it for firmware.
DEFAULT_MAX_BODY_SIZE = 64 * 1024


def check_max_body_size(value: object) -> int:
    """`value` as the bound on request bodies: a whole number of bytes, at least 1; a
    `ConfigError` otherwise."""
    from iotdtls.config import type_name
    from iotdtls.errors import ConfigError

    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        shown = repr(value) if isinstance(value, int) else type_name(value)
        raise ConfigError(f"max_body_size must be a whole number of bytes, at least 1, got {shown}")
    return value


def refusal(request: Message, max_body_size: int) -> Message | None:
    """The response that refuses `request` for its body, or None to hand it to aiocoap:
    4.13 with Size1 = `max_body_size` when the body would go past it, by the Block1 block's
    offset plus its payload (its payload alone without Block1) or by a Size1 option."""
    block1 = request.opt.block1
    end = (block1.start if block1 is not None else 0) + len(request.payload)
    size1 = request.opt.size1
    if end <= max_body_size and (size1 is None or size1 <= max_body_size):
        return None
    response = answer(request, Code.REQUEST_ENTITY_TOO_LARGE, f"at most {max_body_size} bytes")
    response.opt.size1 = max_body_size
    return response


def answer(request: Message, code: Code, diagnostic: str) -> Message:
    """A response of `code` with a diagnostic payload (RFC 7252 §5.5.2) to `request`, with its
    token: piggybacked (an ACK of its message ID) for a confirmable request, a NON for a NON
    (RFC 7252 §5.2.1, §5.2.3; the message ID is left for aiocoap to give)."""
    response = Message(code=code, payload=diagnostic.encode())
    response.token = request.token
    response.remote = request.remote
    if request.mtype == CON:
        response.mtype, response.mid = ACK, request.mid
    else:
        response.mtype = NON
    return response
