"""The Alert protocol message (RFC 5246 §7.2, RFC 6347 §4.1.2.7)."""

from __future__ import annotations

from typing import Self

from iotdtls._buffer import Reader, Writer
from iotdtls._values import statically_frozen
from iotdtls.errors import AlertDescription, AlertLevel
from iotdtls.messages.constants import known

__all__ = ["Alert"]


@statically_frozen
class Alert:
    """Alert: level u8, description u8 (RFC 5246 §7.2).

    Known values decode to `AlertLevel` / `AlertDescription`; unknown ones stay plain ints so the
    engine can still report them (an unknown fatal alert still ends the association).
    """

    level: int
    description: int

    def encode(self) -> bytes:
        writer = Writer()
        writer.push_uint8(self.level)
        writer.push_uint8(self.description)
        return writer.getvalue()

    @classmethod
    def decode(cls, data: bytes) -> Self:
        reader = Reader(data)
        level = known(AlertLevel, reader.pull_uint8())
        description = known(AlertDescription, reader.pull_uint8())
        reader.expect_end()
        return cls(level, description)

    @property
    def is_fatal(self) -> bool:
        """True for level fatal(2)."""
        return self.level == AlertLevel.FATAL
