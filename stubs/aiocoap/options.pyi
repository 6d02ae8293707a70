from collections.abc import Iterator

from aiocoap.numbers.contentformat import ContentFormat
from aiocoap.numbers.optionnumbers import OptionNumber
from aiocoap.optiontypes import BlockOption

class Options:
    uri_host: str | None
    uri_port: int | None
    uri_path: tuple[str, ...]
    content_format: ContentFormat | None
    accept: ContentFormat | None
    observe: int | None
    block1: BlockOption.BlockwiseTuple | None
    block2: BlockOption.BlockwiseTuple | None
    size1: int | None
    size2: int | None
    if_match: tuple[bytes, ...]
    if_none_match: bool
    etag: bytes | None
    no_response: int | None
    def encode(self) -> bytes: ...
    def option_list(self) -> Iterator[_Option]: ...

class _Option:
    number: OptionNumber
