from collections.abc import Iterable
from typing import Any

from aiocoap.interfaces import EndpointAddress
from aiocoap.numbers.codes import Code
from aiocoap.numbers.constants import TransportTuning
from aiocoap.numbers.types import Type
from aiocoap.options import Options

class Message:
    code: Code
    payload: bytes
    opt: Options
    mtype: Type | None
    mid: int | None
    token: bytes
    remote: EndpointAddress
    transport_tuning: TransportTuning
    def __init__(
        self,
        *,
        mtype: Type | None = ...,
        mid: int | None = ...,
        code: Code | None = ...,
        payload: bytes = ...,
        token: bytes = ...,
        uri: str | None = ...,
        transport_tuning: TransportTuning | None = ...,
        **kwargs: Any,
    ) -> None: ...
    @classmethod
    def decode(cls, rawdata: bytes, remote: EndpointAddress | None = ...) -> Message: ...
    def encode(self) -> bytes: ...
    def copy(self, **kwargs: Any) -> Message: ...
    def get_cache_key(self, ignore_options: Iterable[int] = ...) -> tuple[Any, ...]: ...
    def get_request_uri(self, *, local_is_server: bool | None = ...) -> str: ...
    @property
    def unresolved_remote(self) -> str | None: ...
    @property
    def requested_scheme(self) -> str | None: ...
