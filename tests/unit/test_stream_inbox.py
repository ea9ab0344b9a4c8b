"""The stream's inbox: first in, first out; a waiting reader wakes on the next item."""

from __future__ import annotations

import asyncio

import pytest

from xds_server.server.inbox import Inbox


async def test_items_come_out_in_order_and_a_waiting_reader_wakes() -> None:
    inbox: Inbox[str] = Inbox()
    await inbox.put("a")
    inbox.put_nowait("b")
    assert [await inbox.get(), await inbox.get()] == ["a", "b"]
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    assert not reader.done()
    inbox.put_nowait("c")
    assert await asyncio.wait_for(reader, 5) == "c"
    assert len(inbox) == 0


async def test_a_cancelled_reader_leaves_the_inbox_usable() -> None:
    inbox: Inbox[int] = Inbox()
    reader = asyncio.create_task(inbox.get())
    await asyncio.sleep(0)
    reader.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    inbox.put_nowait(1)
    inbox.put_nowait(2)
    assert await asyncio.wait_for(inbox.get(), 5) == 1
    assert len(inbox) == 1
