"""Iterating sync or async sources alike: what the streaming MIME writers share."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")


async def each(items: Iterable[T] | AsyncIterable[T]) -> AsyncIterator[T]:
    """The items of a sync or async iterable, asynchronously."""
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def nonempty_chunks(body: Iterable[bytes] | AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The chunks of a body, sync or async, without the empty ones."""
    async for chunk in each(body):
        if chunk:
            yield chunk
