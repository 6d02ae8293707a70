"""A bound on the Observe registrations (RFC 7641) a coaps server keeps for one association.

aiocoap (0.4.17) adds a client to an observable resource's list for each GET with Observe 0
and a new token, with no bound: one authenticated client registered 1000-5000 observations of
/counter with NON GETs and acknowledged nothing; the server then sent thousands of
notifications a second until the association's idle timeout (3600 s by default), its loop
saturated and other clients' GETs 3-6 times slower (probe BZ). The bound is the transport's,
per association: past `DEFAULT_MAX_OBSERVATIONS` live registrations, a new one is served as a
plain GET, its Observe option removed before aiocoap sees it, so its response carries no
Observe option: RFC 7641 §4.1 lets a server not add a client to the list, and §3.1 tells
the client so by that missing option. Cancelling the oldest instead would need aiocoap's
internals to end an observation from outside its resource (no public call does), and would
end one the client still wants.

A registration is live while aiocoap keeps its request (`TokenManager.incoming_requests`, by
token and remote): it ends when the client cancels it (a GET with Observe 1 or without Observe
on its token, RFC 7641 §3.6, or a Reset of a notification), the resource ends it (an error
notification), or the association ends. `Observations.admit` asks before counting.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["DEFAULT_MAX_OBSERVATIONS", "Observations", "check_max_observations"]

#: The Observe registrations a coaps server keeps live per association by default. A
#: constrained client observes a few resources (RFC 7641 §1.2); each registration costs a
#: notification to send at each change of its resource.
DEFAULT_MAX_OBSERVATIONS = 16


class Observations:
    """The tokens of the Observe registrations an association's requests made, oldest first,
    at most `bound` of them live."""

    __slots__ = ("_tokens", "bound", "refused")

    def __init__(self, bound: int) -> None:
        self.bound = bound
        #: Registrations served as plain GETs for being past the bound.
        self.refused = 0
        self._tokens: dict[bytes, None] = {}

    def __len__(self) -> int:
        return len(self._tokens)

    def admit(self, token: bytes, live: Callable[[bytes], bool]) -> bool:
        """Whether a registration with `token` may be added to the observers' lists (RFC 7641
        §4.1): yes when its token is one of a live registration (a renewal, which aiocoap
        puts in the place of the old one, §3.3.1) or when fewer than `bound` are live, by
        `live`, which says whether aiocoap still keeps the request of a token; no otherwise,
        counted in `refused`."""
        tokens = self._tokens
        for ended in [noted for noted in tokens if not live(noted)]:
            del tokens[ended]
        if token in tokens:
            return True
        if len(tokens) >= self.bound:
            self.refused += 1
            return False
        tokens[token] = None
        return True


def check_max_observations(value: object) -> int:
    """`value` as the bound on Observe registrations per association: a whole number, 0 (no
    observations: every registration served as a plain GET) or more; a `ConfigError`
    otherwise, naming an integer as itself, anything else by its type."""
    from iotdtls.config import check_whole_setting

    return check_whole_setting("max_observations", value, least=0, unit="registrations")
