from enum import IntEnum

class ContentFormat(IntEnum):
    TEXT = 0
    LINKFORMAT = 40
    OCTETSTREAM = 42
    JSON = 50
    CBOR = 60
    @classmethod
    def by_media_type(cls, media_type: str, encoding: str = ...) -> ContentFormat: ...
    @property
    def media_type(self) -> str | None: ...
