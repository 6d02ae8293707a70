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

_NAMES = {
    ContentType.change_cipher_spec: "ChangeCipherSpec",
    ContentType.alert: "Alert",
    ContentType.handshake: "Handshake",
    ContentType.application_data: "ApplicationData",
    ContentType.heartbeat: "Heartbeat",
}


def _describe_handshake(payload: bytes) -> str:
    parts = []
    r = Reader(payload)
    while not r.eof():
        h = HandshakeHeader.decode(r)
        r.pull_bytes(h.fragment_length)
        try:
            name = HandshakeType(h.msg_type).name
        except ValueError:
            name = f"type{h.msg_type}"
        whole = h.fragment_offset == 0 and h.fragment_length == h.length
        frag = "" if whole else f"[{h.fragment_offset}+{h.fragment_length}/{h.length}]"
        parts.append(f"{name}#{h.message_seq}{frag}")
    return " ".join(parts)


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
    """Records of a datagram, e.g. `Handshake(e0/s1: ServerHello#1 ServerHelloDone#2)`."""
    parts = []
    offset = 0
    while offset + RECORD_HEADER_LEN <= len(data):
        header = RecordHeader.decode(data, offset)
        start = offset + RECORD_HEADER_LEN
        if start + header.length > len(data):  # the length field runs past the datagram
            parts.append(f"<a record of {header.length} B cut short at {len(data) - start} B>")
            return " + ".join(parts)
        fragment = data[start : start + header.length]
        parts.append(_describe_record(header, fragment))
        offset = start + header.length
    if offset != len(data):
        parts.append(f"<{len(data) - offset} stray bytes>")
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
