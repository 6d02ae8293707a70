"""The critical options a coaps server recognizes in a request (RFC 7252 §5.4.1), which aiocoap
(0.4.17) does not check: a CON GET with option 2303, 65271 or 9 (OSCORE, which the server does
not do) got 2.05, and a PUT with critical option 2551 got 2.04 and changed the resource.

An option is critical when its number is odd (§5.4.6). A critical option the server does not
recognize in a confirmable request MUST be answered 4.02 Bad Option, and in a non-confirmable
one MUST make the message rejected (§5.4.1, §4.3); `unrecognized_critical` names it. What is
recognized is what aiocoap's server machinery or its `Site` acts on, or hands to the resource
as the place RFC 7252 gives it (`RECOGNIZED`, each with the reason): If-Match and
If-None-Match are handed to the resource, which must evaluate them itself (aiocoap does not;
`iotdtls.coap.preconditions`). The elective (even)
options are not checked: Observe (6), ETag (4), Content-Format (12), Max-Age (14), Hop-Limit
(16), Size1 (60), Size2 (28), Echo (252), No-Response (258), Request-Tag (292) and any unknown
one may be ignored (§5.4.1).

Proxy-Uri and Proxy-Scheme are recognized, and their answer is 5.05 Proxying Not Supported
when the site is no aiocoap proxy (§5.7.2, §5.10.2: `proxying_refused`); a plain `Site` served
the resource of its Uri-Path, ignoring them. OSCORE (9) and EDHOC (21) are recognized when the
site is aiocoap's `OscoreSiteWrapper` (RFC 8613 §2, RFC 9668 §3), which unprotects the
request; without it they are unrecognized (4.02, RFC 8613 §8.1's answer of a server that does
not do OSCORE). Uri-Path-Abbrev (13, draft-ietf-core-uri-path-abbrev) is recognized when the
site is an aiocoap `Site`, which resolves it (4.02 itself for a value it does not know).
Q-Block1 and Q-Block2 (19, 31, RFC 9177) are not: aiocoap does not implement them, and 4.02 is
RFC 9177 §4.1's fallback for a server without them.
"""

from __future__ import annotations

import sys

from aiocoap.message import Message
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.proxy.server import Proxy
from aiocoap.resource import Site

__all__ = ["PROXY_OPTIONS", "RECOGNIZED", "proxying_refused", "unrecognized_critical"]

#: The critical options recognized in any request, and why (RFC 7252 §5.10 unless said).
RECOGNIZED: dict[OptionNumber, str] = {
    # If-Match and If-None-Match are the resource's to evaluate, not aiocoap's: aiocoap hands
    # them on and performs the method whatever they say (a PUT of the demo's /temp with an
    # If-Match nothing matched got 2.04, probe CB). A site's own resources must evaluate them
    # (`iotdtls.coap.preconditions`, as the demo's do); they stay recognized so that sites
    # whose resources do keep working.
    OptionNumber.IF_MATCH: "a precondition the resource evaluates (request.opt.if_match, "
                           "§5.10.8.1: 4.12 is its answer; aiocoap does not)",
    OptionNumber.URI_HOST: "names this server (§5.10.1: the default is the destination); "
                           "aiocoap's virtual hosts (NameBasedVirtualHost) route by it",
    OptionNumber.IF_NONE_MATCH: "a precondition the resource evaluates "
                                "(request.opt.if_none_match, §5.10.8.2; aiocoap does not)",
    OptionNumber.URI_PORT: "names this server's port (§5.10.1)",
    OptionNumber.URI_PATH: "the resource, which the Site routes by",
    OptionNumber.URI_QUERY: "the resource's arguments (request.opt.uri_query)",
    OptionNumber.ACCEPT: "the format the resource should answer in (request.opt.accept, "
                         "§5.10.4: 4.06 is its answer; aiocoap's link-format rendering "
                         "honours it, other resources do not: EvaluatesPreconditions does)",
    OptionNumber.BLOCK2: "aiocoap's block-wise responses (RFC 7959 §2.4)",
    OptionNumber.BLOCK1: "aiocoap's block-wise requests (RFC 7959 §2.5; bounded here, "
                         "iotdtls.coap.uploads)",
    OptionNumber.PROXY_URI: "answered 5.05 unless the site proxies (§5.10.2)",
    OptionNumber.PROXY_SCHEME: "answered 5.05 unless the site proxies (§5.10.2)",
}
#: Recognized when the site is an aiocoap `Site`, which resolves it.
_SITE_OPTIONS = frozenset({OptionNumber.URI_PATH_ABBREV})
#: Recognized when the site is aiocoap's `OscoreSiteWrapper`.
_OSCORE_OPTIONS = frozenset({OptionNumber.OSCORE, OptionNumber.EDHOC})
#: The options that ask a server to act as a forward proxy (RFC 7252 §5.7.2).
PROXY_OPTIONS = frozenset({OptionNumber.PROXY_URI, OptionNumber.PROXY_SCHEME})


def unrecognized_critical(request: Message, site: object) -> int | None:
    """The number of the first critical option of `request` that a server serving `site`
    does not recognize (see the module docstring), or None."""
    for option in request.opt.option_list():
        number = option.number
        if not number.is_critical() or number in RECOGNIZED:
            continue
        if number in _SITE_OPTIONS and isinstance(site, Site):
            continue
        if number in _OSCORE_OPTIONS and _protects_with_oscore(site):
            continue
        return int(number)
    return None


def proxying_refused(request: Message, site: object) -> bool:
    """Whether `request` asks for forward proxying (Proxy-Uri or Proxy-Scheme) of a site that
    is no aiocoap proxy: RFC 7252 §5.10.2's 5.05 Proxying Not Supported."""
    if isinstance(site, Proxy):
        return False
    return any(option.number in PROXY_OPTIONS for option in request.opt.option_list())


def _protects_with_oscore(site: object) -> bool:
    """Whether `site` is aiocoap's `OscoreSiteWrapper`; its module needs OSCORE's extra
    dependencies (cbor2, ...), so a site can be one only once it has been imported."""
    module = sys.modules.get("aiocoap.oscore_sitewrapper")
    wrapper = getattr(module, "OscoreSiteWrapper", None)
    return isinstance(wrapper, type) and isinstance(site, wrapper)
