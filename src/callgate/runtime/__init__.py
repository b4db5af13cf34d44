"""Running the product in the foreground: `callgate turn` and `callgate serve`.

One asyncio loop (uvloop when installed) holds the TURN listeners and, for `serve`, the HTTP app
(uvicorn). SIGTERM and SIGINT set one stop event; everything then shuts down in order and the
process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import re
import signal
import socket
import sys
import time
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any

import uvicorn
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from callgate.accounts.relay_access import DisabledAccounts
from callgate.accounts.service import AccountService
from callgate.accounts.throttle import login_throttle
from callgate.api.app import create_app
from callgate.api.deps import Services
from callgate.api.http_guard import MAX_HEADER_BYTES, guarded_h11
from callgate.api.relays import relay_status
from callgate.api.routes.directory import directory_router
from callgate.api.routes.recordings import recordings_router
from callgate.api.routes.relay_registry import relay_registry_router
from callgate.api.routes.trunks import trunks_router
from callgate.clock import SystemClock
from callgate.config import Settings, turn_config
from callgate.errors import ConfigError
from callgate.identity.service import start_identity
from callgate.keys import load_or_create_secret
from callgate.media import anchor
from callgate.media import internals as anchor_internals
from callgate.metrics import (
    ClusterRefusalCollector,
    MetricsServer,
    build_registry,
    serve_metrics,
)
from callgate.policy.groups import GroupStore
from callgate.policy.store import PolicyStore
from callgate.policy.turn_limits import attach as attach_turn_limits
from callgate.recording.archive import ArchiveTarget
from callgate.recording.decoded import DecodedFiles
from callgate.recording.metrics import ArchiveStatus, RecordingCollector
from callgate.recording.service import RecordingService, recording_settings
from callgate.recording.store import RecordingRepository
from callgate.records.audit import AuditLog, load_or_create_signing_key
from callgate.records.cdr import CdrRepository
from callgate.records.heartbeat import CallHeartbeat
from callgate.records.quality_store import QualityRepository
from callgate.records.relay_sessions import DbEventSink, close_stale_sessions
from callgate.records.retention import PurgeJob
from callgate.runtime.audit import Checkpointer, key_path, record_start
from callgate.runtime.calling import build_signaling
from callgate.runtime.deprovision import end_sessions
from callgate.runtime.monitoring import Monitoring, start_monitoring
from callgate.runtime.recordings import ArchiveJob, recording_jobs
from callgate.runtime.relay_workers import WorkerPool, run_pool
from callgate.runtime.sip import describe as describe_sip
from callgate.runtime.sip import start_sip
from callgate.sip.edge import SipEdge
from callgate.sip.metrics import SipCollector
from callgate.sip.trunk_status import trunk_status
from callgate.storage.db import Store, display_url, open_store
from callgate.storage.health import StorageHealth
from callgate.storage.permissions import private_data_dir
from callgate.storage.repositories import TurnUserRepository
from callgate.tls_local import ensure_local_tls, trust_instructions
from callgate.turn.config import TurnConfig
from callgate.turn.counters import TurnCounters
from callgate.turn.server import TurnServer
from callgate.types import Address, Transport
from callgate.types.events import AllocationEvent, EventKind
from callgate.web.https import Hsts, https_redirect

if TYPE_CHECKING:
    from callgate.runtime.redis_bus import RedisBus  # the redis client: only with --redis-url

log = logging.getLogger("callgate")


_SECRET_PARAM = re.compile(r"((?:token|password|secret)=)[^&\s\"']+", re.IGNORECASE)


class RedactSecrets(logging.Filter):
    """Bearer tokens travel in the signaling URL (`/ws?token=…`), which uvicorn logs when a
    WebSocket is accepted: every record is rewritten with such query values as `***`."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = _SECRET_PARAM.sub(r"\1***", message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def setup_logging(level: str) -> None:
    """Log to stderr, secrets in URLs redacted. Library chatter (alembic, uvicorn access) stays
    quiet unless DEBUG."""
    logging.basicConfig(
        stream=sys.stderr,
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactSecrets())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        # Everything goes through the root handler and its filter, even if something configured
        # uvicorn's loggers before (handlers of their own, a level, or disabled by a dictConfig).
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.disabled = False
        logger.setLevel(logging.NOTSET)
    quiet = logging.DEBUG if level == "DEBUG" else logging.WARNING
    for name in ("alembic", "uvicorn.access", "multipart"):
        logging.getLogger(name).setLevel(quiet)


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run `main()` on uvloop when importable, else on the stock asyncio loop."""
    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:
        log.warning("uvloop not installed; using the stock asyncio loop (slower relay path)")
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


def format_address(address: Address) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def describe_bound(bound: list[tuple[Transport, Address]]) -> str:
    return ", ".join(f"{transport.value} {format_address(addr)}" for transport, addr in bound)


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (the loop's own handlers: no KeyboardInterrupt)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def announce(message: str) -> None:
    """The one line operators and scripts wait for; printed whatever the log level."""
    print(message, file=sys.stderr, flush=True)


class KeyLookup:
    """Long-term keys of static relay-only users (`turn_users`), cached for `ttl` seconds.

    Accounts are not looked up: their passwords never open the relay (they get TURN REST
    credentials in `hello`). Called on authenticated requests, not per relayed packet; the cache
    bounds database reads under bursts. A removed user stops working within `ttl`.
    """

    def __init__(self, users: TurnUserRepository, realm: str, ttl: float = 5.0) -> None:
        self._users = users
        self._realm = realm
        self._ttl = ttl
        self._cache: dict[str, tuple[float, bytes | None]] = {}

    def __call__(self, username: str) -> bytes | None:
        now = time.monotonic()
        hit = self._cache.get(username)
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            key = self._users.key(username, self._realm)
        except SQLAlchemyError as exc:
            log.error("TURN user lookup failed: %s", exc)
            return None
        if len(self._cache) >= 10_000:
            self._cache.clear()
        self._cache[username] = (now + self._ttl, key)
        return key


@contextlib.contextmanager
def metrics_endpoint(
    settings: Settings,
    counters: Callable[[], TurnCounters],
    recordings: RecordingService | None = None,
    monitoring: Monitoring | None = None,
    archive: ArchiveStatus | None = None,
    sip: SipEdge | None = None,
    cluster: Callable[[], dict[tuple[str, str], int]] | None = None,
) -> Generator[MetricsServer | None]:
    if settings.metrics is None:
        yield None
        return
    registry = build_registry(counters)
    if recordings is not None:
        registry.register(RecordingCollector(recordings, archive))
    if monitoring is not None:
        registry.register(monitoring.collector())
    if sip is not None:
        registry.register(SipCollector(sip))
    if cluster is not None:  # what this node ignored from Redis (runtime/cluster_seal.py)
        registry.register(ClusterRefusalCollector(cluster))
    endpoint = serve_metrics(settings.metrics, registry)
    try:
        yield endpoint
    finally:
        endpoint.stop()


def quota_note(config: TurnConfig) -> str:
    """The allocation quotas in words, for the start-up line: a client past one gets 486."""
    per_user = config.max_allocations_per_user
    note = (
        f"at most {per_user} allocations at once per TURN user (--max-allocations-per-user, "
        "0: no limit)"
        if per_user
        else "no per-user allocation limit"
    )
    if config.max_allocations_total:
        note += f", {config.max_allocations_total} in all"
    return note


async def run_turn(settings: Settings) -> None:
    """The relay alone: TURN listeners, optional metrics endpoint, until SIGTERM/SIGINT; with
    `redis_url`, registered for the signaling nodes (runtime/relay_cluster.py)."""
    config = turn_config(settings)
    if settings.redis_url is not None:
        from callgate.runtime.relay_cluster import registered_config, run_registered

        config = registered_config(settings, config)
        stop = stop_on_signals()

        def started(server: TurnServer, metrics: MetricsServer | None) -> None:
            announce(
                _turn_line(server.bound, metrics, config)
                + f"; relay {settings.node_id} in region {settings.region}, call-bound"
            )

        await run_registered(settings, config, stop, started)
        log.info("stopped")
        return
    if config.call_bound:
        raise ConfigError(
            "turn.call_bound needs the signaling engine: use `callgate serve`, or register the "
            "relay with the nodes (--node-id, --redis-url)"
        )
    log.warning(
        "callgate turn is not call-bound: any authenticated user can relay to any address the "
        "peer filter allows (public addresses by default); `callgate serve` binds relaying to calls"
    )
    stop = stop_on_signals()
    if settings.turn.workers > 1:
        await _run_turn_workers(settings, config, stop)
        return
    async with TurnServer(config) as server:
        with metrics_endpoint(settings, server.live_counters) as metrics:
            announce(_turn_line(server.bound, metrics, config))
            await stop.wait()
            log.info("stopping")
    log.info("stopped")


def _turn_line(
    bound: list[tuple[Transport, Address]],
    metrics: MetricsServer | None,
    config: TurnConfig,
    workers: str = "",
) -> str:
    extra = f"; metrics http://{format_address(metrics.address)}/metrics" if metrics else ""
    return (
        f"callgate turn listening on {describe_bound(bound)}{workers}{extra}; {quota_note(config)}"
    )


async def _run_turn_workers(settings: Settings, config: TurnConfig, stop: asyncio.Event) -> None:
    """`callgate turn --workers N` (runtime/relay_workers.py)."""

    @contextlib.contextmanager
    def started(pool: WorkerPool) -> Generator[None]:
        with metrics_endpoint(settings, pool.counters) as metrics:
            pids = ", ".join(str(p.pid) for p in pool.procs)
            workers = f" in {len(pool.procs)} worker processes (pids {pids})"
            announce(_turn_line(pool.bound, metrics, config, workers))
            yield
            log.info("stopping")

    await run_pool(config, settings.turn.workers, settings.log_level, stop, started)
    log.info("stopped")


class _HttpServer(uvicorn.Server):
    """uvicorn without its own signal handling: our stop event owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None]:
        yield


def serve_turn_config(settings: Settings) -> TurnConfig:
    """The relay's config under `serve`: call-bound unless `turn.call_bound = false` says not."""
    config = turn_config(settings)
    if settings.turn.call_bound is None:
        config = dataclasses.replace(config, call_bound=True)
    if config.call_bound and settings.calls.ice_policy == "all":
        log.warning(
            "calls.ice_policy = all with call-bound relaying: a relay reaches only the other "
            "party's relayed address, not its direct candidates (turn.call_bound = false allows it)"
        )
    if not config.call_bound:
        log.warning(
            "turn.call_bound = false: any signed-in account can relay to any address the peer "
            "filter allows (public addresses by default), not only to the other party of its call"
        )
    return config


def _health(
    store: Store,
    server: TurnServer,
    sink: DbEventSink,
    storage: StorageHealth,
    recordings: RecordingService,
    bus: RedisBus | None = None,
    archive: ArchiveJob | None = None,
    sip: SipEdge | None = None,
) -> dict[str, Any]:
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        database: dict[str, Any] = {"ok": True}
    except SQLAlchemyError as exc:
        database = {"ok": False, "error": type(exc).__name__}
    return {
        "database": database,
        # The write probe (storage/health.py): false while a write fails (disk full), true again
        # by itself on the first probe that succeeds.
        "storage": {"ok": storage.writable, "error": storage.error},
        "turn": {"ok": True, "listeners": describe_bound(server.bound)},
        "recorder": {"dropped": sink.dropped, "write_errors": sink.write_errors},
        "call_recording": recordings.health(),
        **({"cluster": bus.health()} if bus is not None else {}),
        **({"recording_archive": archive.health()} if archive is not None else {}),
        # carriers answering OPTIONS (sip/trunk_pings.py): degraded, not down, when one is not
        **({"sip_trunks": sip.pings.summary()} if sip is not None and sip.pings.health else {}),
    }


def record_or_refuse(
    storage: StorageHealth, relay_id: str | None = None
) -> tuple[DbEventSink, Callable[[TurnServer], None]]:
    """The relay-session recorder, failing closed: a write it cannot make marks the storage
    unwritable (new allocations get 508) and ends the allocation whose creation went unrecorded.
    The second value attaches the server once it exists. Rows are marked with `relay_id`."""
    loop = asyncio.get_running_loop()
    servers: list[TurnServer] = []

    def failed(event: AllocationEvent, exc: SQLAlchemyError) -> None:  # writer thread
        storage.failed(exc)
        if event.kind is EventKind.CREATED and servers:
            loop.call_soon_threadsafe(servers[0].end_allocation, event.allocation_id, "unrecorded")

    def attach(server: TurnServer) -> None:
        servers.append(server)
        server.handler.can_record = lambda: storage.writable

    return DbEventSink(storage.sessions, on_failure=failed, relay_id=relay_id), attach


async def _start_http(
    settings: Settings, app: Any, *, address: Address | None = None, tls: bool = False
) -> tuple[_HttpServer, asyncio.Task[None]]:
    """uvicorn serving `app` on `address` (default `settings.http`), over TLS with the
    certificate and key of `settings.turn` when `tls`."""
    host, port = address or settings.http
    cert, key = (settings.turn.cert, settings.turn.key) if tls else (None, None)
    limits = settings.limits
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        lifespan="off",
        http=guarded_h11(limits.http_header_timeout_s),  # half-sent heads are cut off
        h11_max_incomplete_event_size=MAX_HEADER_BYTES,
        limit_concurrency=limits.http_max_connections,
        ssl_certfile=str(cert) if cert else None,
        ssl_keyfile=str(key) if key else None,
    )
    http = _HttpServer(config)
    task = asyncio.create_task(http.serve())
    while not http.started:
        if task.done():  # uvicorn exits (SystemExit) when it cannot bind
            with contextlib.suppress(SystemExit):
                task.result()
            scheme = "HTTPS" if tls else "HTTP"
            raise OSError(f"cannot listen on {scheme} {format_address((host, port))}")
        await asyncio.sleep(0.02)
    return http, task


async def _local_tls(settings: Settings) -> Settings:
    """With --self-signed: the local CA and a server certificate for the addresses this server is
    reached at (DATA_DIR/tls), announced with how to trust it; the settings then use them."""
    if not settings.self_signed:
        return settings
    https = settings.https_address()
    names = [settings.http[0], settings.turn.relay_ip or "", settings.turn.relay_ip6 or ""]
    names += [https[0] if https else "", settings.turn.tls_name or ""]
    names += [host for host, _port in settings.turn.tls_listen]
    names += ["localhost", "127.0.0.1", "::1", socket.gethostname()]
    names = [n for n in names if n and n not in ("0.0.0.0", "::")]
    local = await asyncio.to_thread(ensure_local_tls, settings.data_dir, names)
    made = "created" if local.created_ca else "using"
    announce(f"{made} local CA {local.ca_cert}; {trust_instructions(local.ca_cert)}")
    turn = settings.turn.model_copy(update={"cert": local.cert, "key": local.key})
    return settings.model_copy(update={"turn": turn})


async def _prepare_records(
    store: Store, accounts: AccountService, node_id: str | None = None
) -> None:  # node_id: one node among several (its own relay's sessions, its own records)
    """Start-up chores on the store: the first admin (password printed once), and CDRs a dead
    server left open finalized as `server-restart` (with a node id: only this node's own)."""
    password = await asyncio.to_thread(accounts.ensure_first_admin)
    if password is not None:
        announce(
            f"created the first administrator: user 'admin', password {password} "
            "(shown only now; change it with `callgate user passwd admin`)"
        )
    # relay sessions first: the call records then link them with their last counters
    sessions = await asyncio.to_thread(close_stale_sessions, store.sessions, relay_id=node_id)
    if sessions:
        log.warning("closed %d relay session(s) left open by a previous run", sessions)
    closed = await asyncio.to_thread(CdrRepository(store).close_stale, node_id=node_id)
    if closed:
        log.warning("finalized %d call record(s) left open by a previous run", closed)


async def _start_audit(store: Store, settings: Settings) -> Checkpointer:
    """config.start in the audit log, and the signer of its periodic checkpoints."""
    path = key_path(settings)
    try:
        key = await asyncio.to_thread(load_or_create_signing_key, path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"audit signing key {path}: {exc}") from exc
    audit = AuditLog(store)
    await asyncio.to_thread(record_start, audit, settings, "serve")
    return Checkpointer(audit, key, settings.audit.checkpoint_interval_s)


async def _start_recordings(store: Store, settings: Settings) -> RecordingService:
    """The recorder; recordings a dead server left open are closed as `interrupted`."""
    service = RecordingService(
        RecordingRepository(store), recording_settings(settings.recording, settings.data_dir)
    )
    recovered = await asyncio.to_thread(service.recover)
    if recovered:
        log.warning("closed %d recording(s) left open by a previous run", recovered)
    # the anchor's aiortc/aioice internals, checked before any call needs them (logged there)
    changed = await asyncio.to_thread(anchor_internals.problems)
    if changed:
        service.refuse(f"media anchor: aiortc/aioice internals changed: {'; '.join(changed)}")
    return service


async def run_serve(settings: Settings) -> None:
    """Everything on one box: SQLite store, TURN relay with DB users and records, HTTP app."""
    if settings.turn.workers > 1:
        raise ConfigError(
            "turn.workers > 1 is for `callgate turn`: under `serve` the relay stays in the one "
            "process that holds the call engine, the records and the account checks"
        )
    if settings.redis_url is not None and settings.node_id is None:  # the CLI says so first
        raise ConfigError("--redis-url needs --node-id (each node of a cluster has its own)")
    seal = None
    if settings.redis_url is not None:
        from callgate.runtime.cluster_seal import node_seal

        seal = node_seal(settings)
    await asyncio.to_thread(private_data_dir, settings.data_dir)
    settings = await _local_tls(settings)
    store = await asyncio.to_thread(open_store, settings.database())
    log.info("store %s open and migrated", display_url(settings.database()))
    config = serve_turn_config(settings)
    accounts = AccountService(store, config.realm)
    try:
        await _prepare_records(store, accounts, settings.node_id)
        checkpointer = await _start_audit(store, settings)
        recordings = await _start_recordings(store, settings)
    except BaseException:
        store.close()
        raise
    storage = StorageHealth(store)
    await asyncio.to_thread(storage.probe)
    sink, attach_recorder = record_or_refuse(storage, relay_id=settings.node_id)
    lookup = KeyLookup(TurnUserRepository(store.sessions), config.realm)
    # several nodes: this node writes only the call records it holds (signaling/handover.py)
    cdrs = CdrRepository(store, node_id=settings.node_id if settings.redis_url else None)
    policy = PolicyStore(store)
    services = Services(
        accounts=accounts,
        cdrs=cdrs,
        policy=policy,
        groups=GroupStore(store),
        audit=AuditLog(store),
        audit_key=key_path(settings),
        login_throttle=login_throttle(
            settings.limits.login_account_failures,
            settings.limits.login_address_failures,
            settings.limits.login_delay_s,
            settings.limits.login_max_delay_s,
        ),
    )
    # Signaling hands out TURN REST credentials: the relay must know the secret they are signed
    # with. Without one configured, serve keeps its own in the data directory.
    secret = config.auth_secret or load_or_create_secret(settings.data_dir, "turn-rest-secret")
    config = dataclasses.replace(config, auth_secret=secret)
    stop = stop_on_signals()
    # hourly, while a retention period is set
    purge_job = PurgeJob(store.engine, audit_key=key_path(settings))
    archive = settings.recording.archive
    decoded_files = DecodedFiles()  # playback: decoded recordings, removed at shutdown
    recording_purge, archive_job = await recording_jobs(
        recordings, ArchiveTarget.of(archive), archive.interval_s, archive.max_lag_s,
        AuditLog(store), archive.hold_check_s,
    )  # fmt: skip
    identity = await start_identity(settings.identity, store, accounts)
    bus = None
    if settings.redis_url is not None and settings.node_id is not None and seal is not None:
        from callgate.runtime.redis_bus import RedisBus

        bus = RedisBus(settings.redis_url.get_secret_value(), settings.node_id, seal)
    services = dataclasses.replace(services, password_sign_in=identity.password_sign_in)
    forget_turn: Callable[[], None] | None = None  # undoes use_local_turn
    try:
        async with TurnServer(config, events=sink, key_lookup=lookup, auth_events=sink) as server:
            attach_recorder(server)
            # every bridge of this process (the SIP edge's too) hands its legs' packets to this
            # relay in-process while it runs (media/srtp_path.py)
            forget_turn = anchor.use_local_turn(server.udp_client)
            probe_task = asyncio.create_task(storage.run(), name="storage-probe")
            calls = build_signaling(
                settings.calls,
                accounts,
                cdrs,
                QualityRepository(store.sessions),
                server,
                secret,
                SystemClock(),
                call_policy=policy,
                recordings=recordings,
                node_id=settings.node_id,
                bus=bus,
                lease=settings.node_lease,
                relays=bus.relays if bus is not None else None,
                region=settings.region,
            )
            await calls.hub.start()
            identity.on_deprovisioned(functools.partial(end_sessions, calls.hub))
            sip = await start_sip(
                settings, store, calls, redis=bus.client if bus is not None else None
            )
            if bus is not None:
                await bus.start()
            heartbeat = CallHeartbeat(
                store.engine,
                lambda: [call.call_id for call in calls.hub.engine.live_calls()],
                node_id=cdrs.node_id,
            )
            await heartbeat.start()
            await checkpointer.start()
            await purge_job.start()
            await recording_purge.start()
            if archive_job is not None:
                await archive_job.start()
            group_limits = await attach_turn_limits(store, server.handler, config.deny_peers)
            disabled = DisabledAccounts(store, server, settings.calls.credential_ttl)
            await disabled.apply()
            disabled_task = asyncio.create_task(disabled.run(), name="disabled-accounts")
            monitoring = start_monitoring(settings, store)
            # The admin API reads the hub's live calls and the relay's counters in-process.
            services = dataclasses.replace(
                services, live=calls.hub, relays=lambda: [relay_status(server)]
            )
            # No /metrics on the HTTP app (it has no authentication): `--metrics HOST:PORT`.
            app = create_app(
                health=lambda: _health(
                    store, server, sink, storage, recordings, bus, archive_job, sip
                ),
                services=services,
                routers=[
                    calls.router,
                    directory_router(
                        calls.hub,
                        sip.devices if sip is not None else None,
                        getattr(calls.hub, "cluster_presence", None),
                    ),
                    recordings_router(
                        recordings,
                        AuditLog(store),
                        recording_purge,
                        checkpointer.key,
                        on_hold=archive_job.wake if archive_job is not None else None,
                        decoded_files=decoded_files,
                    ),
                    identity.router(),
                    monitoring.router,
                    *(
                        [relay_registry_router(bus.relays, bus.drain_relay, AuditLog(store))]
                        if bus is not None
                        else []
                    ),
                    trunks_router(
                        functools.partial(trunk_status, sip) if sip is not None else None,
                        AuditLog(store),
                    ),
                ],
                storage_writable=lambda: storage.writable,
            )
            https = settings.https_address()
            where = f"http http://{format_address(settings.http)}"
            if https is None:
                web = [await _start_http(settings, app)]
            else:  # the app over TLS; plain HTTP only redirects to it
                web = [await _start_http(settings, Hsts(app), address=https, tls=True)]
                web.append(await _start_http(settings, https_redirect(*https)))
                where = f"https https://{format_address(https)} ({where} redirects to it)"
            with metrics_endpoint(
                settings, server.live_counters, recordings, monitoring, archive_job, sip,
                cluster=(lambda: dict(seal.refusals)) if seal is not None else None,
            ) as metrics:  # fmt: skip
                extra = (
                    f"; metrics http://{format_address(metrics.address)}/metrics" if metrics else ""
                ) + describe_sip(sip)
                announce(
                    f"callgate serve listening on {describe_bound(server.bound)}; "
                    f"{where}{extra}; data {settings.data_dir}; {quota_note(server.config)}"
                )
                stop_wait = asyncio.create_task(stop.wait())
                tasks = {stop_wait, *(task for _, task in web)}
                await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
                stop_wait.cancel()
                log.info("stopping")
                for http, _ in web:
                    http.should_exit = True
                for _, http_task in web:
                    with contextlib.suppress(SystemExit):
                        await http_task
                await monitoring.stop()
                await heartbeat.stop()
                if sip is not None:
                    await sip.close()
                await calls.hub.stop()
                if bus is not None:
                    await bus.stop()
                await purge_job.stop()
                await recording_purge.stop()
                if archive_job is not None:
                    await archive_job.stop()
                group_limits.cancel()
                disabled_task.cancel()
                probe_task.cancel()
    finally:
        if forget_turn is not None:
            forget_turn()  # the relay is closed: no bridge may find it any more
        decoded_files.close()  # decrypted audio removed from disk
        await identity.stop()
        await sink.aclose()
        await checkpointer.stop()  # a last checkpoint covering the relay sessions just written
        store.close()
    log.info("stopped")
