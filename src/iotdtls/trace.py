"""One-line descriptions of datagrams for `iotdtls demo` and `-v` (no secrets: protected
records are shown by type, epoch, sequence number and length only)."""

from __future__ import annotations

import logging
from typing import Any

from iotdtls._addresses import format_address
from iotdtls._buffer import Reader
from iotdtls.errors import DecodeError
from iotdtls.messages import Alert, HandshakeHeader, HandshakeType
from iotdtls.record import RECORD_HEADER_LEN, ContentType, RecordHeader

__all__ = ["describe_datagram", "log_datagram"]

#: Records of one datagram, and handshake fragments of one record, described one by one; the
#: rest are counted ("+ 3968 more records"): a datagram of thousands of empty records (a
#: 64 KB datagram holds 5,000) must not make a `-v` log line of a hundred kilobytes.
MAX_DESCRIBED = 32

_NAMES = {
    ContentType.change_cipher_spec: "ChangeCipherSpec",
    ContentType.alert: "Alert",
    ContentType.handshake: "Handshake",
    ContentType.application_data: "ApplicationData",
    ContentType.heartbeat: "Heartbeat",
}


def _describe_handshake(payload: bytes) -> str:
    parts: list[str] = []
    more = 0
    r = Reader(payload)
    while not r.eof():
        h = HandshakeHeader.decode(r)
        r.pull_bytes(h.fragment_length)
        if len(parts) >= MAX_DESCRIBED:
            more += 1
            continue
        try:
            name = HandshakeType(h.msg_type).name
        except ValueError:
            name = f"type{h.msg_type}"
        whole = h.fragment_offset == 0 and h.fragment_length == h.length
        frag = "" if whole else f"[{h.fragment_offset}+{h.fragment_length}/{h.length}]"
        parts.append(f"{name}#{h.message_seq}{frag}")
    if more:
        parts.append(f"+ {_more(more, 'fragment')}")
    return " ".join(parts)


def _more(count: int, what: str) -> str:
    """What was left undescribed beyond `MAX_DESCRIBED`: "1 more record", "2 more records"."""
    return f"{count} more {what}{'' if count == 1 else 's'}"


def _enum_name(value: int) -> str:
    return getattr(value, "name", str(value))


def _describe_record(header: RecordHeader, fragment: bytes) -> str:
    try:
        name = _NAMES[ContentType(header.content_type)]
    except (ValueError, KeyError):
        name = f"type{header.content_type}"
    where = f"e{header.epoch}/s{header.sequence_number}"
    if header.epoch != 0:
        return f"{name}({where}, {len(fragment)} B protected)"
    try:
        if header.content_type == ContentType.handshake:
            return f"{name}({where}: {_describe_handshake(fragment)})"
        if header.content_type == ContentType.alert:
            alert = Alert.decode(fragment)
            return f"{name}({where}: {_enum_name(alert.level)} {_enum_name(alert.description)})"
    except DecodeError:
        return f"{name}({where}, malformed)"
    return f"{name}({where})"


def describe_datagram(data: bytes) -> str:
    """Records of a datagram, e.g. `Handshake(e0/s1: ServerHello#1 ServerHelloDone#2)`: the
    first `MAX_DESCRIBED`, then how many more ("... + 3968 more records")."""
    parts: list[str] = []
    more = 0
    offset = 0
    tail = None
    while offset + RECORD_HEADER_LEN <= len(data):
        header = RecordHeader.decode(data, offset)
        start = offset + RECORD_HEADER_LEN
        if start + header.length > len(data):  # the length field runs past the datagram
            tail = f"<a record of {header.length} B cut short at {len(data) - start} B>"
            break
        if len(parts) < MAX_DESCRIBED:
            parts.append(_describe_record(header, data[start : start + header.length]))
        else:
            more += 1
        offset = start + header.length
    else:
        if offset != len(data):
            tail = f"<{len(data) - offset} stray bytes>"
    if more:
        parts.append(_more(more, "record"))
    if tail is not None:
        parts.append(tail)
    return " + ".join(parts)


def log_datagram(log: logging.Logger, direction: str, address: Any, data: bytes) -> None:
    """Log one datagram at DEBUG on `log` (`-v`): "-> 127.0.0.1:5684 78 B Handshake(e0/s0:
    client_hello#0)", `direction` "->" sent or "<-" received."""
    if log.isEnabledFor(logging.DEBUG):
        try:
            text = describe_datagram(data)
        except Exception as exc:  # a malformed datagram from the network
            text = f"undecodable ({type(exc).__name__})"
        log.debug("%s %s %d B %s", direction, format_address(address), len(data), text)
