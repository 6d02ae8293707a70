import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiocoap import interfaces
from aiocoap.credentials import CredentialsMap
from aiocoap.message import Message

class ClientObservation:
    def __aiter__(self) -> AsyncIterator[Message]: ...
    def register_callback(self, callback: Callable[[Message], object]) -> None: ...
    def register_errback(self, callback: Callable[[Exception], object]) -> None: ...
    def cancel(self) -> None: ...
    @property
    def cancelled(self) -> bool: ...

class Request:
    response: asyncio.Future[Message]
    observation: ClientObservation | None

class Context:
    serversite: interfaces.Resource | None
    log: logging.Logger
    client_credentials: CredentialsMap
    server_credentials: CredentialsMap
    def __init__(
        self,
        loop: asyncio.AbstractEventLoop | None = ...,
        serversite: interfaces.Resource | None = ...,
        loggername: str = ...,
        client_credentials: CredentialsMap | None = ...,
        server_credentials: CredentialsMap | None = ...,
    ) -> None: ...
    @classmethod
    async def create_client_context(
        cls,
        *,
        loggername: str = ...,
        loop: asyncio.AbstractEventLoop | None = ...,
        transports: Sequence[str] | None = ...,
    ) -> Context: ...
    async def shutdown(self) -> None: ...
    def request(self, request_message: Message, handle_blockwise: bool = ...) -> Request: ...
    # Chooses the transport and fills in message.remote (for coaps: after the handshake).
    async def find_remote_and_interface(self, message: Message) -> object: ...
    # aiocoap's own way of adding a message-layer transport (see iotdtls.coap.context).
    async def _append_tokenmanaged_messagemanaged_transport(
        self,
        message_interface_constructor: Callable[
            [interfaces.MessageManager], Awaitable[interfaces.MessageInterface]
        ],
    ) -> None: ...
