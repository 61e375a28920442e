"""The `fhir-fusion` command: serve, ingest files, inspect the dead-letter queue,
rebuild the search index, write demo messages.

`serve` runs the FHIR API (uvicorn) and the MLLP listener in one asyncio loop over one
store, and closes the store on SIGINT/SIGTERM. Logs never carry patient data: uvicorn's
access log is off because request URLs hold search values such as family names.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sqlite3
import sys
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import uvicorn

from fhir_server import FHIR_VERSION, __version__, demo
from fhir_server.config import (
    SETTINGS,
    ConfigError,
    ServeConfig,
    database_path,
    resolve_serve_config,
    resolve_setting,
)
from fhir_server.storage.base import Context

if TYPE_CHECKING:
    from adapters.pipeline import Pipeline
    from fhir_server.storage.sqlite import SQLiteStore
    from fhir_server.storage.reindex_jobs import Job

log = logging.getLogger(__name__)

CLI_CONTEXT = Context(caller="cli")
MLLP_CONTEXT = Context(caller="mllp")
DICOM_CONTEXT = Context(caller="dicom")


class CommandError(Exception):
    """A command cannot go on; the message says why, for the operator."""


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return int(args.run(args))
    except ConfigError as exc:
        print(f"fhir-fusion: {exc}", file=sys.stderr)
        return 2
    except CommandError as exc:
        print(f"fhir-fusion: {exc}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader stopped reading (`fhir-fusion deadletter list | head`): not a failure;
        # stdout goes to /dev/null so that the flush at exit does not fail again
        with contextlib.suppress(OSError, ValueError, AttributeError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-fusion",
        description="FHIR R4 server that turns HL7v2 feeds into searchable FHIR resources.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    parser.set_defaults(command=None)
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the FHIR API and the MLLP listener")
    for setting in SETTINGS:
        help_text = f"{setting.help} (env {setting.env_var}, default {setting.default})"
        if isinstance(setting.default, bool):
            serve.add_argument(
                setting.option,
                dest=setting.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            serve.add_argument(
                setting.option,
                dest=setting.name,
                type=_argparse_type(setting.parse),
                default=None,
                help=help_text,
            )
    serve.set_defaults(command="serve", run=_run_serve)

    ingest = commands.add_parser("ingest", help="load feed files into the store, offline")
    ingest.add_argument("feed", choices=["hl7v2", "dicom", "csv"], help="kind of input")
    ingest.add_argument(
        "paths", nargs="+", type=Path, metavar="PATH",
        help="files to load (dicom: also folders, walked recursively, and DICOMDIRs)",
    )  # fmt: skip
    csv_options = ingest.add_argument_group("csv")
    csv_options.add_argument("--mapping", metavar="NAME|PATH",
                             help="csv: a built-in mapping (patients, lab-results, vital-signs) "
                                  "or a mapping file (YAML/TOML)")
    csv_options.add_argument("--encoding", help="csv: the files' encoding (default: detected)")
    csv_options.add_argument("--delimiter", help="csv: one character (default: sniffed)")
    csv_options.add_argument("--dry-run", action="store_true",
                             help="csv: show the first resources it would make; store nothing")
    _add_data_dir(ingest)
    ingest.set_defaults(command="ingest", run=_run_ingest)

    deadletter = commands.add_parser("deadletter", help="inspect and retry rejected inputs")
    actions = deadletter.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = actions.add_parser("list", help="rejected inputs: id, feed, received, reason")
    listing.add_argument(
        "--limit", type=_argparse_type(_positive), default=100, help="at most this many (newest)"
    )
    show = actions.add_parser("show", help="one rejected input with its raw content")
    retry = actions.add_parser("retry", help="process a rejected input again")
    for action in (show, retry):
        action.add_argument("input_id", type=int, metavar="ID")
    for action in (listing, show, retry):
        _add_data_dir(action)
    deadletter.set_defaults(command="deadletter", run=_run_deadletter)

    reindex_command = commands.add_parser(
        "reindex", help="rebuild the search index (as $reindex); resumes an interrupted job"
    )
    reindex_command.add_argument(
        "--type", action="append", default=[], metavar="TYPE",
        help="only resources of this type (repeatable; default all)",
    )  # fmt: skip
    reindex_command.add_argument(
        "--search-index", default=None, metavar="URL",
        help="also rebuild this external search index, e.g. elasticsearch://host:9200 "
        "(env FHIR_FUSION_SEARCH_INDEX)",
    )  # fmt: skip
    reindex_command.add_argument(
        "--recreate-search-index", action="store_true",
        help="drop and create the external index first (new mappings or analysis plugins)",
    )  # fmt: skip
    _add_data_dir(reindex_command)
    reindex_command.set_defaults(command="reindex", run=_run_reindex)

    messages = commands.add_parser(
        "demo-messages", help="write the generated HL7v2 demo messages to a file"
    )
    messages.add_argument(
        "--count", type=_argparse_type(_positive), default=40, help="how many (default 40)"
    )
    messages.add_argument(
        "--seed",
        type=int,
        default=demo.DEFAULT_SEED,
        help=f"same seed, same messages (default {demo.DEFAULT_SEED})",
    )
    messages.add_argument("--out", type=Path, required=True, metavar="FILE", help="file to write")
    messages.set_defaults(command="demo-messages", run=_run_demo_messages)

    from terminology.cli import add_terminology_command

    add_terminology_command(commands, _add_data_dir)
    from fhir_server.mongodb_command import add_mongodb_command

    add_mongodb_command(commands)
    return parser


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder holding the SQLite database (env FHIR_FUSION_DATA_DIR, "
        "default fhir-fusion-data)",
    )


def _argparse_type(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return convert


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"{value} is not a positive count")
    return value


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


# --- serve -------------------------------------------------------------------------


def _run_serve(args: argparse.Namespace) -> int:
    config = resolve_serve_config(vars(args))
    _configure_logging(config.log_level)
    return asyncio.run(serve(config))


async def serve(config: ServeConfig) -> int:
    """Run until SIGINT/SIGTERM; the exit status is 0 after a clean stop."""
    from adapters.hl7v2.mllp import start_mllp_server
    from adapters.pipeline import Pipeline
    from fhir_server.app import create_app

    store = await _open_store(config.data_dir, config.sqlite_synchronous, url=config.store)
    mllp_server: asyncio.Server | None = None
    dicom_listener: Any = None  # adapters.dicom.scp.DicomListener
    demo_task: asyncio.Task[None] | None = None
    maps_task: asyncio.Task[None] | None = None  # source ConceptMaps for the adapters
    terminology_task: asyncio.Task[None] | None = None  # terminology.content.preload
    search: Any = None  # fhir_server.search_index.RunningIndex with --search-index
    try:
        search = await _start_search_index(store, config.search_index)
        pipeline = Pipeline(store, max_resources=config.max_input_resources)
        from terminology.standardise import keep_refreshed

        maps_task = asyncio.create_task(keep_refreshed(store, MLLP_CONTEXT))
        from terminology.content import preload

        # shipped terminology loaded and its resources stored off the request path
        terminology_task = asyncio.create_task(preload(store, Context()))
        app = create_app(store, base_url=config.base_url, pipeline=pipeline)
        server = _Server(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.port,
                log_config=None,
                access_log=False,
                log_level=config.log_level,
                lifespan="on",
            )
        )
        if config.mllp_enabled:
            try:
                mllp_server = await start_mllp_server(
                    pipeline, MLLP_CONTEXT, config.host, config.mllp_port,
                    idle_timeout=config.mllp_idle_timeout,
                )
            except OSError as exc:
                print(
                    f"fhir-fusion: cannot listen for MLLP on {config.host}:{config.mllp_port}: "
                    f"{exc.strerror or exc}",
                    file=sys.stderr,
                )
                return 1
        if config.dicom_port:
            dicom_listener = _start_dicom(config, pipeline)
            if dicom_listener is None:
                return 1
        with _stop_on_signals(server):
            serving = asyncio.create_task(_serve_http(server))
            while not server.started and not serving.done():
                await asyncio.sleep(0.02)
            if not server.started:
                print(
                    f"fhir-fusion: the HTTP server on {config.host}:{config.port} did not start",
                    file=sys.stderr,
                )
                return await serving or 1
            http_port = server.servers[0].sockets[0].getsockname()[1]
            mllp_port = mllp_server.sockets[0].getsockname()[1] if mllp_server else 0
            if dicom_listener is not None:
                from adapters.dicom.translate import set_public_base

                set_public_base(f"http://{_url_host(config.host)}:{http_port}")
            _print_banner(config, http_port, mllp_port,
                          dicom_listener.port if dicom_listener else 0)
            if config.demo:
                demo_task = asyncio.create_task(_feed_demo(config, mllp_port))
            return await serving
    finally:
        if maps_task is not None:
            maps_task.cancel()
        if terminology_task is not None:
            terminology_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await terminology_task
        if demo_task is not None:
            demo_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await demo_task
        if mllp_server is not None:
            mllp_server.close()
            from adapters.hl7v2.mllp import finish_messages

            # messages being stored are committed and ACKed before the store closes
            await finish_messages(mllp_server, 30)
            # Python 3.13+ can drop idle sender connections, which 3.12+ would wait for;
            # a message cut off there gets no AA, so its sender sends it again.
            close_clients = getattr(mllp_server, "close_clients", None)
            if close_clients is not None:
                close_clients()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(mllp_server.wait_closed(), 5)
        if dicom_listener is not None:
            # in a thread: a C-STORE being answered needs this loop to finish its store work
            await asyncio.to_thread(dicom_listener.stop)
        if search is not None:
            await search.stop()
        await store.close()
        log.info("store closed")


def _start_dicom(config: ServeConfig, pipeline: Pipeline) -> Any:
    """The DICOM listener (adapters/dicom/scp.py) on config.dicom_port; None, after
    saying why, when the port cannot be had."""
    from adapters.dicom.scp import start_dicom_listener

    try:
        return start_dicom_listener(
            pipeline, DICOM_CONTEXT, config.host, config.dicom_port,
            ae_title=config.dicom_ae, allowed_callers=config.dicom_allowed_aes,
        )  # fmt: skip
    except OSError as exc:
        print(
            f"fhir-fusion: cannot listen for DICOM on {config.host}:{config.dicom_port}: "
            f"{exc.strerror or exc}",
            file=sys.stderr,
        )
        return None


async def _start_search_index(store: Any, url: str | None) -> Any:
    """The external search index and its outbox indexer, running; None without one
    (then a SQLite file that had an index attached is detached from it)."""
    if not url:
        if getattr(store, "search_outbox", False):
            from fhir_server import search_index

            dropped = await search_index.detach_outbox(store)
            log.warning(
                "no --search-index: the store's external search index is detached (%d pending "
                "changes dropped); run `fhir-fusion reindex --search-index URL` before using "
                "it again", dropped,
            )  # fmt: skip
        return None
    from fhir_server import search_index
    from search.elasticsearch_index import SearchIndexError

    try:
        return await search_index.start(store, url)
    except SearchIndexError as exc:
        raise CommandError(str(exc)) from None


async def _serve_http(server: uvicorn.Server) -> int:
    """Serve until told to stop; uvicorn calls sys.exit when it cannot start (after
    logging why), which must not escape the event loop."""
    try:
        await server.serve()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) and exc.code else 1
    return 0


class _Server(uvicorn.Server):
    """uvicorn.Server without its own signal capture: uvicorn re-raises a caught SIGTERM
    after shutting down, which would end the process before the store is closed.
    `_stop_on_signals` handles the signals instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


@contextlib.contextmanager
def _stop_on_signals(server: uvicorn.Server) -> Generator[None, None, None]:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        if server.should_exit:
            server.force_exit = True  # a second Ctrl+C drops open connections
        server.should_exit = True

    handled = (signal.SIGINT, signal.SIGTERM)
    for sig in handled:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in handled:
            loop.remove_signal_handler(sig)


def _url_host(host: str) -> str:
    if host in ("", "0.0.0.0"):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _print_banner(
    config: ServeConfig, http_port: int, mllp_port: int, dicom_port: int = 0
) -> None:
    base = f"http://{_url_host(config.host)}:{http_port}/fhir"
    lines = [
        f"fhir-fusion {__version__} (FHIR {FHIR_VERSION}) on {config.database_path.resolve()}",
        f"  FHIR base       {base}",
        f"  capabilities    {base}/metadata",
    ]
    if config.demo:
        # these searches find something only once the demo feed has been stored
        family = demo.demo_patients(1)[0].family
        lines += [
            f"  try             {base}/Patient?family={quote(family)}",
            f"                  {base}/Observation?code=http://loinc.org|2345-7",
        ]
    if mllp_port:
        lines.append(f"  MLLP (HL7v2)    {_url_host(config.host).strip('[]')}:{mllp_port}")
    else:
        lines.append("  MLLP (HL7v2)    off")
    if dicom_port:
        where = f"{_url_host(config.host).strip('[]')}:{dicom_port}"
        lines.append(f"  DICOM (C-STORE) {config.dicom_ae} at {where}")
        lines.append(f"  DICOMweb        http://{_url_host(config.host)}:{http_port}/dicomweb")
    else:
        lines.append("  DICOM           off")
    if config.search_index:
        from search.elasticsearch_index import ElasticsearchConfig

        es_url = ElasticsearchConfig.parse(config.search_index).url
        lines.append(f"  search index    Elasticsearch {es_url} (outbox in the store)")
    lines.append("Press Ctrl+C to stop.")
    print("\n".join(lines), flush=True)


async def _feed_demo(config: ServeConfig, mllp_port: int) -> None:
    messages = demo.demo_messages(config.demo_count)
    host = _url_host(config.host).strip("[]")
    try:
        summary = await demo.send_messages(host, mllp_port, [m.payload for m in messages])
    except OSError as exc:
        print(f"demo feed: could not reach {host}:{mllp_port}: {exc}", flush=True)
        return
    print(
        f"demo feed: {summary.sent} HL7v2 messages sent over MLLP to {host}:{mllp_port}; "
        f"{summary.accepted} acknowledged (AA), {summary.refused} refused (AE/AR), "
        f"{summary.unanswered} unanswered",
        flush=True,
    )


# --- offline commands ---------------------------------------------------------------


def _data_dir(args: argparse.Namespace) -> Path:
    return Path(resolve_setting("data_dir", args.data_dir))


async def _open_store(
    data_dir: Path,
    synchronous: str | None = None,
    *,
    must_exist: bool = False,
    url: str | None = None,
) -> SQLiteStore:
    """The store in `data_dir`; `must_exist` (read-only commands) refuses to create it.
    A MongoDB URL (`url`, else FHIR_FUSION_STORE) opens the MongoDB store instead."""
    from fhir_server.storage.sqlite import SQLiteStore

    url = url or resolve_setting("store", None)
    if url:
        return await _open_mongodb(url)  # type: ignore[no-any-return]  # same protocol

    path = database_path(data_dir)
    if must_exist and not path.is_file():
        where = "folder" if not data_dir.is_dir() else "database"
        missing = data_dir if where == "folder" else path
        raise CommandError(f"no data {where} at {missing} (nothing has been stored there)")
    synchronous = synchronous or resolve_setting("sqlite_synchronous", None)
    try:
        return await SQLiteStore.open(path, synchronous=synchronous.upper())
    except (OSError, sqlite3.Error, RuntimeError) as exc:
        raise CommandError(f"cannot open the database {path}: {exc}") from None


async def _open_mongodb(url: str) -> Any:
    """The MongoDB store at `url`; a server that cannot be reached within the server
    selection timeout (10 s unless the URL sets serverSelectionTimeoutMS) is an error
    naming MongoDB and the address, never a server left waiting."""
    from fhir_server.storage.mongodb import MongoStore, StoreUnavailable

    try:
        return await MongoStore.open(url)
    except StoreUnavailable as exc:
        raise CommandError(str(exc)) from None


async def _open(data_dir: Path, *, must_exist: bool = False) -> tuple[SQLiteStore, Pipeline]:
    from adapters.pipeline import Pipeline

    from terminology.standardise import refresh

    store = await _open_store(data_dir, must_exist=must_exist)
    await refresh(store, CLI_CONTEXT)  # the source ConceptMaps the HL7v2 translator applies
    return store, Pipeline(store)


def _run_ingest(args: argparse.Namespace) -> int:
    _configure_logging("warning")
    if args.feed == "dicom":
        return asyncio.run(ingest_dicom(_data_dir(args), args.paths))
    if args.feed == "csv":
        return _run_ingest_csv(args)
    return asyncio.run(ingest(_data_dir(args), args.paths))


def _run_ingest_csv(args: argparse.Namespace) -> int:
    from adapters.csv.cli import dry_run

    if not args.mapping:
        raise CommandError("ingest csv needs --mapping NAME|PATH")
    if args.dry_run:
        status, text = dry_run(args.paths, args.mapping, args.encoding, args.delimiter)
        print(text)
        return status
    return asyncio.run(ingest_csv_files(_data_dir(args), args.paths, args.mapping,
                                        args.encoding, args.delimiter))


async def ingest_csv_files(data_dir: Path, paths: list[Path], mapping: str,
                           encoding: str | None, delimiter: str | None) -> int:
    from adapters.csv.cli import ingest_paths

    store, pipeline = await _open(data_dir)
    try:
        status, text = await ingest_paths(pipeline, CLI_CONTEXT, paths, mapping, encoding,
                                          delimiter)
    finally:
        await store.close()
    print(text)
    return status


async def ingest_dicom(data_dir: Path, paths: list[Path]) -> int:
    """As `ingest`, for DICOM files, folders and DICOMDIRs (adapters/dicom/files.py)."""
    from adapters.dicom.files import ingest_dicom_paths

    store, pipeline = await _open(data_dir)
    try:
        summary = await ingest_dicom_paths(pipeline, CLI_CONTEXT, paths)
    finally:
        await store.close()
    print(summary)
    return 1 if summary.unreadable else 0


async def ingest(data_dir: Path, paths: list[Path]) -> int:
    """Exit status 0 when every file could be read, whatever became of its messages
    (rejected ones are kept in the dead-letter queue); 1 when a file could not be read."""
    from adapters.ingest import ingest_files

    store, pipeline = await _open(data_dir)
    try:
        summary = await ingest_files(pipeline, CLI_CONTEXT, paths)
    finally:
        await store.close()
    print(summary)
    return 1 if summary.unreadable else 0


def _run_reindex(args: argparse.Namespace) -> int:
    _configure_logging("warning")
    search_index = resolve_setting("search_index", args.search_index)
    return asyncio.run(
        reindex_store(
            _data_dir(args), tuple(args.type), search_index, args.recreate_search_index
        )
    )


async def reindex_store(
    data_dir: Path,
    types: tuple[str, ...],
    search_index: str | None = None,
    recreate_search_index: bool = False,
) -> int:
    """Run (or resume) a reindex job over the store to completion, showing progress;
    then rebuild the external search index, when one is given."""
    from conformance.definitions import RESOURCE_TYPES
    from fhir_server import reindex

    for name in types:
        if name not in RESOURCE_TYPES:
            raise CommandError(f"--type {name} is not an R4 resource type")
    # an offline maintenance command: a mistyped folder is an error, not a new database
    store = await _open_store(data_dir, must_exist=True)
    try:
        job = await reindex.start(store, Context(), tuple(sorted(set(types))))
        if job.processed:
            print(f"resuming reindex job {job.id} at {job.processed} of {job.shown_total}")
        last = [0.0]

        def show(progress: Job) -> None:
            now = asyncio.get_running_loop().time()
            if now - last[0] >= 2:
                last[0] = now
                print(f"reindex: {progress.processed} of {progress.shown_total}", file=sys.stderr)

        job = await reindex.run(store, Context(), job, progress=show)
        print(f"reindex job {job.id} completed: {job.processed} resources")
        if search_index:
            await _rebuild_search_index(store, search_index, types, recreate_search_index)
    finally:
        await store.close()
    return 0


async def _rebuild_search_index(
    store: Any, url: str, types: tuple[str, ...], recreate: bool
) -> None:
    """fhir_server.search_index.rebuild of the default tenant, with progress."""
    from elastic_transport import TransportError

    from fhir_server import search_index
    from search.elasticsearch_index import ElasticsearchIndex, SearchIndexError

    try:
        index = ElasticsearchIndex.connect(url)
    except ValueError as exc:
        raise CommandError(f"--search-index: {exc}") from None
    last = [0.0]

    def show(progress: search_index.RebuildProgress) -> None:
        now = asyncio.get_running_loop().time()
        if now - last[0] >= 2:
            last[0] = now
            print(f"search index: {progress.processed} of {progress.total}", file=sys.stderr)

    try:
        await index.check()
        done = await search_index.rebuild(
            store, index, Context().tenant, tuple(sorted(set(types))), recreate=recreate,
            progress=show,
        )  # fmt: skip
    except (SearchIndexError, TransportError) as exc:
        raise CommandError(str(exc) or type(exc).__name__) from None
    finally:
        await index.close()
    print(
        f"search index {index.config.url} rebuilt: {done.processed} resources"
        + (f", {done.failed} refused (see the Elasticsearch logs)" if done.failed else "")
    )
    if done.failed:
        raise CommandError(f"{done.failed} resources were not indexed")


def _run_deadletter(args: argparse.Namespace) -> int:
    _configure_logging("warning")
    data_dir = _data_dir(args)
    if args.action == "list":
        return asyncio.run(deadletter_list(data_dir, args.limit))
    if args.action == "show":
        return asyncio.run(deadletter_show(data_dir, args.input_id))
    return asyncio.run(deadletter_retry(data_dir, args.input_id))


async def deadletter_list(data_dir: Path, limit: int) -> int:
    store = await _open_store(data_dir, must_exist=True)
    try:
        rejected = await store.list_inputs(CLI_CONTEXT, status="rejected", limit=limit)
    finally:
        await store.close()
    if not rejected:
        print("no rejected inputs")
        return 0
    print("id\tfeed\treceived\treason")
    for raw in rejected:
        print(f"{raw.id}\t{raw.feed}\t{raw.received_at}\t{raw.reason or ''}")
    return 0


async def deadletter_show(data_dir: Path, input_id: int) -> int:
    """The input as received. It holds patient data: this prints it only because the
    operator asked for this one input on their own machine."""
    store = await _open_store(data_dir, must_exist=True)
    try:
        raw = await store.get_input(CLI_CONTEXT, input_id)
    finally:
        await store.close()
    if raw is None:
        raise CommandError(f"no input with id {input_id}")
    print(f"id: {raw.id}\nfeed: {raw.feed}\nreceived: {raw.received_at}")
    if raw.status == "rejected" and raw.result and raw.result.get("received", 1) > 1:
        print(f"received again: {raw.result['received']} times in all, "
              f"last {raw.result.get('last_received', '')}")
    print(f"status: {raw.status}\nreason: {raw.reason or ''}\n")
    print(raw.content.decode("utf-8", errors="replace").replace("\r", "\n").rstrip())
    return 0


async def deadletter_retry(data_dir: Path, input_id: int) -> int:
    """Exit status 0 when the input is now stored (or already was), 1 when it is still
    rejected."""
    store, pipeline = await _open(data_dir, must_exist=True)
    try:
        try:
            outcome = await pipeline.retry(CLI_CONTEXT, input_id)
        except LookupError:
            raise CommandError(f"no input with id {input_id}") from None
    finally:
        await store.close()
    print(outcome)
    return 0 if outcome.ok else 1


# --- demo messages --------------------------------------------------------------------


def _run_demo_messages(args: argparse.Namespace) -> int:
    messages = demo.demo_messages(args.count, args.seed)
    try:
        demo.write_messages(args.out, messages)
    except OSError as exc:
        raise CommandError(f"cannot write {args.out}: {exc.strerror or exc}") from None
    print(f"wrote {len(messages)} HL7v2 messages to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
