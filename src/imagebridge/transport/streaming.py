"""An HTTP response that streams MTOM parts while producer tasks are still fetching them.

:class:`ProducedMtomResponse` owns a task group: the reply's producer runs in
it and puts attachments into a bounded channel; the response writes each one
as it arrives (attachments first, root part last).  If the client goes away,
Starlette stops sending and the producers are cancelled; ``close`` always runs.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from imagebridge.transport.messages import StreamedReply
from imagebridge.wire.mtom import Attachment, encode_mtom_root_last, mtom_content_type
from imagebridge.wire.xml import Element

RootRenderer = Callable[[Element], Awaitable[bytes]]
"""Turns the final payload element into the serialized SOAP envelope."""

log = logging.getLogger(__name__)


class ProducedMtomResponse(StreamingResponse):
    """Streams a :class:`StreamedReply` as a root-last MTOM/XOP package."""

    def __init__(
        self, reply: StreamedReply, root: RootRenderer, *, boundary: str, root_content_id: str
    ) -> None:
        super().__init__(iter(()), media_type=mtom_content_type(boundary, root_content_id))
        self._reply = reply
        self._root = root
        self._boundary = boundary
        self._root_content_id = root_content_id

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        sender, receiver = anyio.create_memory_object_stream[Attachment](self._reply.buffer)
        try:
            with receiver:  # closed once the response is written or abandoned
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._produce, sender)
                    self.body_iterator = self._body(receiver)
                    await super().__call__(scope, receive, send)
                    # Normal end: the producer already finished; after a disconnect, stop it.
                    tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await self._reply.close()

    async def _produce(self, sender: MemoryObjectSendStream[Attachment]) -> None:
        async with sender:
            try:
                await self._reply.produce(sender)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.info("client went away while the reply was being produced")

    def _body(
        self, receiver: MemoryObjectReceiveStream[Attachment]
    ) -> AsyncIterator[bytes | memoryview]:
        async def root() -> bytes:
            return await self._root(await self._reply.payload())

        # The channel is read without a generator per part; a small part is
        # written as one chunk with its header (InstanceBody.with_head).
        return encode_mtom_root_last(
            _Ready(receiver), root, boundary=self._boundary, root_content_id=self._root_content_id
        )


class _Ready:
    """The attachments of a channel: those already there without a trip through the loop.

    ``receive`` always yields to the event loop first, one loop round per part;
    the response yields anyway whenever the socket is busy or the channel empty.
    """

    __slots__ = ("_receiver",)

    def __init__(self, receiver: MemoryObjectReceiveStream[Attachment]) -> None:
        self._receiver = receiver

    def __aiter__(self) -> _Ready:
        return self

    async def __anext__(self) -> Attachment:
        try:
            return self._receiver.receive_nowait()
        except anyio.WouldBlock:
            pass
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
        try:
            return await self._receiver.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None
