"""Which process this is, for associations that belong to the process that made them.

A process forked after an association was made holds copies of its keys and sockets, but
must never send under them: its records would carry the record sequence numbers the parent
uses next, one nonce twice under one AEAD key (RFC 5116 §3, RFC 6655 §3), and a close_notify
of its own would end the parent's association.
"""

from __future__ import annotations

import os

from iotdtls.errors import LocalProtocolError

#: The running process's id, kept current in a forked child (`os.register_at_fork`): read on
#: every send, it costs an attribute read where `os.getpid()` is a system call.
pid = os.getpid()


def _note_fork() -> None:
    global pid
    pid = os.getpid()


os.register_at_fork(after_in_child=_note_fork)


def forked_from(owner: int) -> bool:
    """This process is not `owner`, the one that made the association (a fork of it)."""
    return pid != owner


def require_owner(owner: int, what: str = "client") -> None:
    """Raise `LocalProtocolError` in a process other than `owner` (saying why)."""
    if pid != owner:
        raise LocalProtocolError(
            f"this {what} belongs to the process that made it (pid {owner}): sending from a"
            " forked process would reuse that process's record sequence numbers under its"
            " keys (one nonce twice, RFC 5116 §3)"
        )
