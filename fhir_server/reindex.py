"""The `$reindex` operation: rebuild the search index (search parameters, custom
SearchParameters, full text) from the stored resources, in batches, resumably.

    POST [base]/$reindex            every type (or `type` parameters, repeatable)
    POST [base]/{type}/$reindex     one type
    GET  [base]/$reindex/{job}      progress

Asynchronous request pattern (R4 async.html): the POST answers 202 Accepted with
Content-Location naming the job's status URL; a GET there answers 202 with `X-Progress`
while the job runs and 200 when it has completed. Both carry a Parameters resource:
job, status (in-progress | interrupted | completed), type (one per type in scope),
processed, total, started, finished.

Jobs are the store's own (fhir_server.storage.reindex_jobs: SQLite keeps them in its
file, MongoDB in a collection, each with the tenant). Each batch of BATCH_SIZE
resources is rebuilt together with an advance of the job's cursor, so writes from
clients interleave between batches and a job killed with the server continues where it
stopped. A job no process is running resumes by itself: the app resumes the unfinished
jobs of its tenant at start-up (`resume_unfinished`, from the app's lifespan), and a
status poll of such a job resumes it (so a client following the async pattern never
polls a dead job forever; break-new finding 10); POSTing `$reindex` with the same
scope, or `fhir-fusion reindex`, resumes it too. With several API workers on one
MongoDB store, a job another worker has run a batch of in the last LIVE_SECONDS counts
as running there: its status is in-progress and neither a POST nor a poll starts it a
second time (two workers that resume one job at once are safe: each batch is a
compare-and-set on the job's cursor). A job whose run failed in this process answers
its status poll with a 500 OperationOutcome saying how to resume it. At shutdown the
running jobs stop after their current batch (`stop_running`). A store without reindex
jobs answers 501.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from conformance.definitions import RESOURCE_TYPES
from fhir_server import jsonutil
from fhir_server.errors import FHIRError, Issue
from fhir_server.rest.routes import EndpointGroup, Interaction
from fhir_server.storage.base import Context, ResourceStore
from fhir_server.storage.reindex_jobs import COMPLETED, Job, ReindexJobs, jobs_of
from search import custom

if TYPE_CHECKING:
    from fhir_server.rest.handlers import Handlers

logger = logging.getLogger(__name__)

BATCH_SIZE = 300
OPERATION = "reindex"
# Query parameters every operation accepts besides its own (R4 http.html#parameters).
_GENERAL_PARAMETERS = frozenset({"_format", "_pretty"})

# Jobs running in this process, by (id of the store, tenant, job id): shared by the
# endpoints and the start-up resume; stores being closed stop their jobs between batches.
_TASKS: dict[tuple[int, str, int], asyncio.Task[Job]] = {}
_STOPPING: set[int] = set()


def _jobs(store: ResourceStore) -> ReindexJobs:
    jobs = jobs_of(store)
    if jobs is None:
        raise FHIRError.simple(
            501, "not-supported", "$reindex is not implemented for this resource store"
        )
    return jobs


async def start(store: ResourceStore, ctx: Context, types: tuple[str, ...]) -> Job:
    """A new job (or the unfinished one with the same scope)."""
    return await _jobs(store).start(ctx, types)


async def get(store: ResourceStore, ctx: Context, job_id: int) -> Job | None:
    return await _jobs(store).get(ctx, job_id)


async def run(
    store: ResourceStore,
    ctx: Context,
    job: Job,
    batch_size: int = BATCH_SIZE,
    max_batches: int | None = None,
    progress: Callable[[Job], None] | None = None,
) -> Job:
    """Run `job` until it completes (or for `max_batches` batches), one batch at a time,
    yielding to the event loop between batches."""
    jobs = _jobs(store)
    batches = 0
    while job.status != COMPLETED and (max_batches is None or batches < max_batches):
        job, indexed = await jobs.run_batch(ctx, job, batch_size)
        if indexed:  # recorded: now the parameters may be searched
            custom.REGISTRY.mark_indexed(indexed)
        batches += 1
        if progress is not None:
            progress(job)
        await asyncio.sleep(0)
    return job


def _key(store: ResourceStore, job: Job) -> tuple[int, str, int]:
    return (id(store), job.tenant, job.id)


def running_here(store: ResourceStore, job: Job) -> bool:
    task = _TASKS.get(_key(store, job))
    return task is not None and not task.done()


def failure_here(store: ResourceStore, job: Job) -> BaseException | None:
    """The exception that stopped this process's run of `job`, if it failed."""
    task = _TASKS.get(_key(store, job))
    if task is None or not task.done() or task.cancelled():
        return None
    return task.exception()


def launch(store: ResourceStore, ctx: Context, job: Job) -> asyncio.Task[Job]:
    """Run `job` in the background in this process (the running task when there is one)."""
    key = _key(store, job)
    task = _TASKS.get(key)
    if task is None or task.done():
        task = _TASKS[key] = asyncio.create_task(_run_in_background(store, ctx, job))
    return task


async def _run_in_background(store: ResourceStore, ctx: Context, job: Job) -> Job:
    try:
        while job.status != COMPLETED and id(store) not in _STOPPING:
            job = await run(store, ctx, job, max_batches=1)
        return job
    except Exception as exc:
        # the job stays in progress with its cursor; POST $reindex resumes it
        logger.error("$reindex job %s stopped: %s", job.id, type(exc).__name__)
        raise


async def resume_unfinished(store: ResourceStore, ctx: Context) -> list[Job]:
    """Resume ctx.tenant's unfinished jobs that no process is running (at start-up, after
    a server was stopped or killed during a job); the jobs resumed."""
    jobs = jobs_of(store)
    if jobs is None:
        return []
    try:
        unfinished = await jobs.unfinished(ctx)
    except Exception as exc:  # noqa: BLE001 - start-up goes on; a POST or a poll resumes
        logger.warning("unfinished reindex jobs not resumed: %s", type(exc).__name__)
        return []
    resumed = [job for job in unfinished
               if not running_here(store, job) and not job.running_elsewhere()]  # fmt: skip
    for job in resumed:
        logger.info("resuming reindex job %s at %s of %s", job.id, job.processed, job.total)
        launch(store, ctx, job)
    return resumed


async def stop_running(store: ResourceStore) -> None:
    """Let the jobs running on `store` in this process finish their current batch and
    stop (before the store is closed); they stay resumable."""
    mine = [task for key, task in _TASKS.items() if key[0] == id(store)]
    _STOPPING.add(id(store))
    try:
        await asyncio.gather(*mine, return_exceptions=True)
    finally:
        _STOPPING.discard(id(store))
        for key in [key for key in _TASKS if key[0] == id(store)]:
            del _TASKS[key]


def _bad(diagnostics: str, where: str) -> FHIRError:
    return FHIRError(400, [Issue("invalid", diagnostics, expression=(where,))])


def _types(values: list[str], where: str) -> tuple[str, ...]:
    types: list[str] = []
    for value in values:
        for name in value.split(","):
            name = name.strip()
            if name not in RESOURCE_TYPES:
                raise _bad("Unknown resource type", where)
            types.append(name)
    return tuple(sorted(set(types)))


def parameters(job: Job, running: bool) -> dict[str, Any]:
    status = job.status if job.status == COMPLETED or running else "interrupted"
    params: list[dict[str, Any]] = [
        {"name": "job", "valueString": str(job.id)},
        {"name": "status", "valueCode": status},
        *({"name": "type", "valueCode": t} for t in job.types),
        {"name": "processed", "valueInteger": job.processed},
        {"name": "total", "valueInteger": job.shown_total},
        {"name": "started", "valueInstant": job.started_at},
    ]
    if job.finished_at:
        params.append({"name": "finished", "valueInstant": job.finished_at})
    return {"resourceType": "Parameters", "parameter": params}


def operation_definition(base_url: str) -> dict[str, Any]:
    """OperationDefinition/reindex (R4 operationdefinition.html)."""
    return {
        "resourceType": "OperationDefinition",
        "id": OPERATION,
        "url": f"{base_url}/OperationDefinition/{OPERATION}",
        "name": "Reindex",
        "title": "Rebuild the search index",
        "status": "active",
        "kind": "operation",
        "affectsState": False,
        "description": (
            "Rebuilds the search index rows (search parameters, custom SearchParameters, "
            "full text) of the stored resources, in batches, asynchronously (202 with "
            "Content-Location; GET it for progress). A custom SearchParameter becomes "
            "searchable when a job covering its base types completes."
        ),
        "code": OPERATION,
        "system": True,
        "type": True,
        "instance": False,
        "parameter": [
            {"name": "type", "use": "in", "min": 0, "max": "*", "type": "code",
             "documentation": "Resource types to reindex (system level); default all"},
            {"name": "return", "use": "out", "min": 1, "max": "1", "type": "Parameters",
             "documentation": "job, status, type, processed, total, started, finished"},
        ],
    }  # fmt: skip


class ReindexEndpoints:
    """The REST endpoints of $reindex, on the store and context of `handlers`; one
    background task per running job."""

    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers

    def _running_here(self, job: Job) -> bool:
        return running_here(self._handlers.store, job)

    def _base(self, request: Request) -> str:
        from fhir_server.rest import http

        return http.base_url(request, self._handlers.base_path)

    def _answer(self, request: Request, job: Job, status: int | None = None) -> Response:
        from fhir_server.rest import http

        running = self._running_here(job) or job.running_elsewhere()
        headers = {"Content-Location": f"{self._base(request)}/$reindex/{job.id}"}
        if job.status != COMPLETED:
            headers["X-Progress"] = f"{job.processed} of {job.shown_total} resources"
        code = status or (200 if job.status == COMPLETED else 202)
        return http.json_response(jsonutil.dumps(parameters(job, running)), code, headers)

    async def _types_in_body(self, request: Request) -> list[str]:
        if not await request.body():
            return []
        from fhir_server.rest import http

        body = await http.json_body(request)
        if body.get("resourceType") != "Parameters":
            raise _bad("The body must be a Parameters resource", "Parameters")
        values: list[str] = []
        for n, param in enumerate(body.get("parameter") or []):
            if not isinstance(param, dict) or param.get("name") != "type":
                raise _bad("Only the parameter 'type' is known", f"Parameters.parameter[{n}].name")
            value = param.get("valueCode", param.get("valueString"))
            if not isinstance(value, str) or value not in RESOURCE_TYPES:
                raise _bad("Unknown resource type", f"Parameters.parameter[{n}].valueCode")
            values.append(value)
        return values

    async def _start(self, request: Request, types: tuple[str, ...]) -> Response:
        store, ctx = self._handlers.store, self._handlers.ctx
        job = await start(store, ctx, types)
        if job.status != COMPLETED and not self._running_here(job) and not job.running_elsewhere():
            launch(store, ctx, job)
        return self._answer(request, job, 202)

    def _refuse_unknown_parameters(self, request: Request, known: frozenset[str]) -> None:
        """400 naming a query parameter $reindex does not define (a typo such as `_type`
        must not start a reindex of everything; break-new finding 13)."""
        for name in request.query_params:
            if name not in known and name not in _GENERAL_PARAMETERS:
                allowed = ", ".join(sorted(known)) or "none"
                raise _bad(f"Unknown parameter '{name}' for $reindex (it takes: {allowed})",
                           name)  # fmt: skip

    async def reindex_system(self, request: Request) -> Response:
        self._refuse_unknown_parameters(request, frozenset({"type"}))
        values = request.query_params.getlist("type")
        types = _types(values, "type") + _types(await self._types_in_body(request), "type")
        return await self._start(request, tuple(sorted(set(types))))

    async def reindex_type(self, request: Request) -> Response:
        resource_type = request.path_params["type"]
        if resource_type not in RESOURCE_TYPES:
            raise FHIRError.simple(404, "not-supported", "Unknown resource type")
        self._refuse_unknown_parameters(request, frozenset())
        if await self._types_in_body(request):
            raise _bad("The type is in the path of a type-level $reindex", "Parameters")
        return await self._start(request, (resource_type,))

    async def reindex_status(self, request: Request) -> Response:
        text = request.path_params["job"]
        job = await get(self._handlers.store, self._handlers.ctx, int(text)) if (
            text.isdigit() and len(text) < 18
        ) else None
        if job is None:
            raise FHIRError.simple(404, "not-found", "There is no reindex job with this id")
        store = self._handlers.store
        if job.status != COMPLETED and not self._running_here(job):
            failed = failure_here(store, job)
            if failed is not None:  # a final answer, not a 202 to poll forever
                raise FHIRError.simple(
                    500, "exception", f"Reindex job {job.id} stopped at {job.processed} of "
                    f"{job.shown_total} resources ({type(failed).__name__}); POST $reindex "
                    "with the same scope to resume it from there")  # fmt: skip
            if not job.running_elsewhere():  # nobody runs it (server restarted, worker gone)
                launch(store, self._handlers.ctx, job)
        return self._answer(request, job)

    async def reindex_definition(self, request: Request) -> Response:
        from fhir_server.rest import http

        return http.json_response(jsonutil.dumps(operation_definition(self._base(request))))

    async def wait(self, job_id: int) -> Job:
        """The finished job (for tests)."""
        return await _TASKS[(id(self._handlers.store), self._handlers.ctx.tenant, job_id)]


def _endpoints(handlers: Handlers) -> ReindexEndpoints:
    return ReindexEndpoints(handlers)


ENDPOINTS = EndpointGroup(
    (
        Interaction("POST", "/$reindex", "reindex_system", ("$reindex",), "system"),
        Interaction("GET", "/$reindex/{job}", "reindex_status", (), "system"),
        Interaction("POST", "/{type}/$reindex", "reindex_type", ("$reindex",), "type"),
        Interaction("GET", "/OperationDefinition/reindex", "reindex_definition", (), "system"),
    ),
    _endpoints,
)
