"""No relay allocation without its record: when the recorder cannot write an allocation's
`relay_sessions` row (disk full, a read-only or broken store), that allocation is ended and
further Allocates are refused with 508 until the storage probe succeeds again. Real TURN server
and client over loopback UDP; the store is SQLite turned read-only under the running recorder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import event

from callgate.runtime import record_or_refuse
from callgate.storage.db import open_store, sqlite_url
from callgate.storage.health import StorageHealth
from callgate.stun.constants import MessageClass
from callgate.turn.server import TurnServer
from tests.conftest import eventually, turn_config
from tests.integration.turn_client import PASSWORD, USER, error_code, udp_client


async def test_an_unrecorded_allocation_is_ended_and_new_ones_refused_until_writes_work(
    tmp_path: Path,
) -> None:
    store = open_store(sqlite_url(tmp_path))
    read_only = [False]

    def connect(dbapi_connection: Any, _record: Any) -> None:
        if read_only[0]:
            dbapi_connection.execute("PRAGMA query_only = ON")

    event.listen(store.engine, "connect", connect)
    storage = StorageHealth(store)
    sink, attach = record_or_refuse(storage)
    server = TurnServer(turn_config(users={USER: PASSWORD}), events=sink)
    attach(server)
    try:
        async with server:
            read_only[0] = True
            store.engine.dispose()  # every new connection refuses writes
            address = server.address()
            async with udp_client(address) as client:
                response = await client.allocate()
                assert response.cls is MessageClass.SUCCESS  # granted before the write failed
                await eventually(lambda: len(server.manager) == 0, 10.0, "allocation ended")
                assert not storage.writable
                assert error_code(await client.refresh()) == 437  # it is gone
            async with udp_client(address) as other:
                assert error_code(await other.allocate()) == 508
            read_only[0] = False
            store.engine.dispose()
            assert storage.probe() is True  # writes work again: allocations resume
            async with udp_client(address) as again:
                assert (await again.allocate()).cls is MessageClass.SUCCESS
            await sink.aflush()
    finally:
        await sink.aclose()
        store.close()
    assert sink.write_errors >= 1
