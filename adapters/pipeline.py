"""The one write path every feed goes through.

receive -> keep the raw input -> translate to a transaction Bundle -> validate ->
store with its search index -> record Provenance -> acknowledge.

The raw input is committed in the same database transaction as the resources made
from it (`process_bundle(..., before_commit=...)`), so an acknowledged input is never
lost and a stored resource always has its input. An input that cannot be translated or
stored is kept as "rejected" with the reason, in a transaction of its own; nothing is
dropped. The same bytes twice are found by their SHA-256 and answered "duplicate" with
the first result, creating nothing.

Every feed has durable counters (received, stored, duplicate, rejected, reprocessed,
recovered), added to in the transaction that keeps the input, so they survive restarts
and agree across processes: received = stored + duplicate + rejected; a retry counts as
reprocessed, and as recovered when it stores. A caller that splits one delivery into
inputs of several records (a CSV file in chunks of rows) counts records with `units`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Literal

from adapters.translation import (
    AnyTranslator,
    StoreTranslator,
    Translation,
    TranslationError,
    describe_failure,
)
from fhir_server.bundles import process_bundle
from fhir_server.errors import FHIRError
from fhir_server.storage.base import Context, RawInput, ResourceStore, Transaction

log = logging.getLogger(__name__)

INPUT_HASH_SYSTEM = "urn:fhir-fusion:input:sha256"
PARTICIPANT_TYPE = "http://terminology.hl7.org/CodeSystem/provenance-participant-type"
DATA_OPERATION = "http://terminology.hl7.org/CodeSystem/v3-DataOperation"

Status = Literal["stored", "duplicate", "rejected"]


@dataclass
class IngestResult:
    """What became of one input. `error` is the translation or storage error of a
    rejected input (an `Hl7Error` carries what an HL7 ACK needs)."""

    status: Status
    input_id: int | None
    feed: str
    reason: str | None = None
    result: dict[str, Any] | None = None
    error: Exception | None = field(default=None, repr=False)
    response: dict[str, Any] | None = field(default=None, repr=False)  # transaction-response

    @property
    def ok(self) -> bool:
        return self.status != "rejected"

    def __str__(self) -> str:
        text = f"input {self.input_id} ({self.feed}): {self.status}"
        if self.reason:
            text += f": {self.reason}"
        elif self.result and "resources" in self.result:
            text += f", {len(self.result['resources'])} resources"
        return text


def _hl7v2_translator() -> AnyTranslator:
    from adapters.hl7v2.identity import checked_translator

    return checked_translator()  # translation, then the patient-identity checks (F27/F28)


def _csv_translator() -> AnyTranslator:
    from adapters.csv.translate import TRANSLATOR

    return TRANSLATOR


def _dicom_translator() -> AnyTranslator:
    from adapters.dicom.translate import translator

    return translator()  # reads the kept file back from the blob store (retry)


# Feeds known by name; a translator is loaded the first time its feed is used.
DEFAULT_TRANSLATORS: dict[str, Callable[[], AnyTranslator]] = {
    "hl7v2": _hl7v2_translator,
    "csv": _csv_translator,
    "dicom": _dicom_translator,
}

# The most resources one input may make: a bigger one is refused (kept as rejected) rather
# than hold the store, and every caller waiting on it, for minutes.
DEFAULT_MAX_RESOURCES = 2000

COUNTERS = ("received", "stored", "duplicate", "rejected", "reprocessed", "recovered")


class Pipeline:
    def __init__(self, store: ResourceStore,
                 translators: dict[str, AnyTranslator] | None = None, *,
                 max_resources: int = DEFAULT_MAX_RESOURCES) -> None:
        self.store = store
        self.max_resources = max_resources
        self._translators: dict[str, AnyTranslator] = dict(translators or {})
        # Identical inputs arriving at once are processed one after the other, so the
        # second sees the first as a duplicate instead of racing it.
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # lock and its users

    def register(self, feed: str, translator: AnyTranslator) -> None:
        self._translators[feed] = translator

    def translator(self, feed: str) -> AnyTranslator:
        found = self._translators.get(feed)
        if found is None:
            factory = DEFAULT_TRANSLATORS.get(feed)
            if factory is None:
                known = ", ".join(sorted({*self._translators, *DEFAULT_TRANSLATORS}))
                raise ValueError(f"no translator for feed {feed!r} (known: {known})")
            found = self._translators[feed] = factory()
        return found

    async def ingest(self, ctx: Context, feed: str, raw: bytes, *,
                     translation: Translation | None = None, units: int = 1,
                     keep_rejected: bool = True) -> IngestResult:
        """`translation` is one the caller already made from `raw` (having had to look
        inside to split its delivery); `units` the records `raw` holds, for the counters.
        With `keep_rejected=False` a failure is returned without keeping or counting
        the input, for a caller that then takes it apart (a CSV chunk, row by row)."""
        translator = self.translator(feed)
        digest = hashlib.sha256(raw).hexdigest()
        async with self._one_at_a_time(digest):
            earlier = await self.store.find_input(ctx, feed, digest)
            if earlier is not None:
                async with self.store.transaction(ctx) as txn:
                    await txn.count_feed(feed, {"received": units, "duplicate": units})
                return IngestResult("duplicate", earlier.id, feed, result=earlier.result)
            # The same content rejected before is the same dead letter received again:
            # it is counted there, and a success now settles it.
            before = await self.store.find_input(ctx, feed, digest, status="rejected")
            arrival = _Arrival(units, retry=False, keep_rejected=keep_rejected)
            return await self._process(ctx, feed, raw, digest, translator,
                                       before.id if before else None, _received(before),
                                       translation=translation, arrival=arrival)

    async def counters(self, ctx: Context) -> dict[str, dict[str, int]]:
        """Per feed, every counter of COUNTERS (0 when never added to) and "pending",
        the rejected inputs not settled yet."""
        found = await self.store.feed_counters(ctx)
        feeds = sorted({*found, *self._translators, *DEFAULT_TRANSLATORS})
        return {feed: {name: found.get(feed, {}).get(name, 0) for name in (*COUNTERS, "pending")}
                for feed in feeds}

    async def keep_rejected(self, ctx: Context, feed: str, raw: bytes,
                            reason: str) -> IngestResult:
        """Keep an input refused before translation (e.g. a frame over the size limit) as
        rejected, so that nothing received is lost; the same content again is counted on
        the same entry."""
        digest = hashlib.sha256(raw).hexdigest()
        async with self._one_at_a_time(digest):
            before = await self.store.find_input(ctx, feed, digest, status="rejected")
            return await self._reject(ctx, feed, raw, reason, None,
                                      before.id if before else None, _received(before),
                                      _Arrival(1, retry=False))

    @contextlib.asynccontextmanager
    async def _one_at_a_time(self, digest: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(digest, (asyncio.Lock(), 0))
        self._locks[digest] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[digest]
            if users == 1:
                del self._locks[digest]
            else:
                self._locks[digest] = (lock, users - 1)

    async def retry(self, ctx: Context, input_id: int) -> IngestResult:
        """Process a kept input again (after a fix to the translator or to the data it
        refers to). An input already stored is answered as a duplicate."""
        raw = await self.store.get_input(ctx, input_id)
        if raw is None:
            raise LookupError(f"input {input_id} is not known")
        if raw.status == "stored":
            return IngestResult("duplicate", raw.id, raw.feed, result=raw.result)
        translator = self.translator(raw.feed)
        digest = hashlib.sha256(raw.content).hexdigest()
        earlier = await self.store.find_input(ctx, raw.feed, digest)
        if earlier is not None:
            # the sender sent it again and that copy was stored: this one is settled too
            result = {**(earlier.result or {}), "duplicate_of": earlier.id}
            async with self.store.transaction(ctx) as txn:
                await txn.record_input(raw.feed, raw.content, "stored", result=result,
                                       input_id=raw.id)
                await txn.count_feed(raw.feed, {"reprocessed": 1, "recovered": 1})
            return IngestResult("duplicate", earlier.id, raw.feed, result=earlier.result)
        return await self._process(ctx, raw.feed, raw.content, digest, translator, raw.id,
                                   raw.result, arrival=_Arrival(1, retry=True))

    async def rejected(self, ctx: Context, feed: str | None = None, limit: int = 100,
                       before: int | None = None) -> list[RawInput]:
        """Rejected inputs, newest first; `before` (an input id) pages on."""
        return await self.store.list_inputs(ctx, feed=feed, status="rejected", limit=limit,
                                            before=before)

    async def _translate(self, ctx: Context, translator: AnyTranslator,
                         raw: bytes) -> Translation:
        if isinstance(translator, StoreTranslator):
            return await translator.translate(self.store, ctx, raw)
        # Parsing a big message is seconds of CPU: a worker thread keeps the event loop (and
        # so every listener and the store's connection) serving others meanwhile.
        return await asyncio.to_thread(translator, raw)

    async def _process(self, ctx: Context, feed: str, raw: bytes, digest: str,
                       translator: AnyTranslator, input_id: int | None,
                       received: dict[str, Any] | None = None, *,
                       translation: Translation | None = None,
                       arrival: _Arrival) -> IngestResult:
        """`input_id` names the rejected entry this input settles or updates; `received`
        is what that entry keeps about how often it arrived."""
        try:
            if translation is None:
                translation = await self._translate(ctx, translator, raw)
        except TranslationError as exc:
            return await self._reject(ctx, feed, raw, str(exc), exc, input_id, received,
                                      arrival)
        except Exception as exc:  # a translator bug must not lose the input
            log.error("translator for feed %s failed: %s", feed, describe_failure(exc))
            reason = f"internal error in the {feed} translator ({type(exc).__name__})"
            return await self._reject(ctx, feed, raw, reason, exc, input_id, received,
                                      arrival)

        bundle = translation.bundle
        if len(bundle["entry"]) > self.max_resources:
            reason = (f"The input makes {len(bundle['entry'])} resources; this server takes at "
                      f"most {self.max_resources} per input (--max-input-resources)")
            return await self._reject(ctx, feed, raw, reason, None, input_id, received,
                                      arrival)
        keep = translation.details.get("keep_existing")
        if keep:
            try:
                await _keep_existing(self.store, ctx, bundle, set(keep))
            except FHIRError as exc:
                return await self._reject(ctx, feed, raw, _located(translation, exc), exc,
                                          input_id, received, arrival)
        bundle["entry"].append(_provenance(translation, digest))
        summary: dict[str, Any] = {
            "details": translation.details,
            "resources": [_entry_summary(e) for e in bundle["entry"]],
        }
        kept: list[int] = []

        async def keep_input(txn: Transaction) -> None:
            # the id of the attempt that commits: process_bundle re-runs the transaction
            # after a write conflict (storage.retry), and an aborted attempt's id is void
            kept[:] = [await txn.record_input(feed, raw, "stored", result=summary,
                                              input_id=input_id)]
            await txn.count_feed(feed, arrival.counts("stored"))

        try:
            response = await process_bundle(self.store, ctx, bundle, before_commit=keep_input)
        except FHIRError as exc:
            return await self._reject(ctx, feed, raw, _located(translation, exc), exc,
                                      input_id, received, arrival)
        except Exception as exc:  # the store or the engine failed: keep the input if we can
            log.error("storing input on feed %s failed: %s", feed, describe_failure(exc))
            reason = f"internal error while storing ({type(exc).__name__})"
            return await self._reject(ctx, feed, raw, reason, exc, input_id, received,
                                      arrival)
        return IngestResult("stored", kept[0], feed, result=summary, response=response)

    async def _reject(self, ctx: Context, feed: str, raw: bytes, reason: str,
                      error: Exception | None, input_id: int | None,
                      received: dict[str, Any] | None, arrival: _Arrival) -> IngestResult:
        if not arrival.keep_rejected:
            return IngestResult("rejected", None, feed, reason=reason, error=error)
        async with self.store.transaction(ctx) as txn:
            kept = await txn.record_input(feed, raw, "rejected", reason=reason,
                                          result=received, input_id=input_id)
            await txn.count_feed(feed, arrival.counts("rejected"))
        log.info("input %s on feed %s rejected: %s", kept, feed, reason)
        return IngestResult("rejected", kept, feed, reason=reason, error=error)


@dataclass(frozen=True)
class _Arrival:
    """How an input came to be processed, for the counters: received (`units` records)
    or re-processed from the dead-letter queue."""

    units: int
    retry: bool
    keep_rejected: bool = True

    def counts(self, outcome: Literal["stored", "rejected"]) -> dict[str, int]:
        if self.retry:
            return {"reprocessed": self.units, "recovered": self.units if outcome == "stored"
                    else 0}
        return {"received": self.units, outcome: self.units}


async def _keep_existing(store: ResourceStore, ctx: Context, bundle: dict[str, Any],
                         urls: set[str]) -> None:
    """For the conditional updates the translator lists (by fullUrl), start from the
    resource as stored, so that what the message does not say is kept: an A40 says of
    the replaced patient only that it is inactive and replaced, not who it is."""
    from fhir_server.operations import StoreReader, find_matches, parse_criteria

    reader = StoreReader(store, ctx)
    for entry in bundle["entry"]:
        request = entry["request"]
        if entry["fullUrl"] not in urls or request["method"] != "PUT" or "?" not in request["url"]:
            continue
        rtype, _, criteria = request["url"].partition("?")
        matches = await find_matches(reader, rtype, parse_criteria(rtype, criteria))
        if len(matches) == 1 and matches[0].resource is not None:
            current = {k: v for k, v in matches[0].resource.items() if k not in ("id", "meta")}
            merged = {**current, **entry["resource"]}
            # identifiers add up: the message names some of them, the store may know more
            identifiers = list(current.get("identifier", []))
            identifiers += [i for i in entry["resource"].get("identifier", [])
                            if i not in identifiers]
            if identifiers:
                merged["identifier"] = identifiers
            entry["resource"] = merged


def _received(before: RawInput | None) -> dict[str, Any]:
    """How often a rejected content has arrived, counting this time: kept as the rejected
    entry's result (its received_at stays the first arrival)."""
    count = 1
    if before is not None and isinstance(before.result, dict):
        count = int(before.result.get("received", 1)) + 1
    elif before is not None:
        count = 2
    now = datetime.now(timezone.utc).isoformat(timespec="microseconds")
    return {"received": count, "last_received": now}


def _entry_summary(entry: dict[str, Any]) -> dict[str, str]:
    """What an entry wrote, by the business key that finds it again (the conditional
    criteria), since the ids the store gives are only known after the commit."""
    request = entry["request"]
    summary = {"type": entry["resource"]["resourceType"], "method": request["method"]}
    if request.get("ifNoneExist"):
        summary["match"] = f"{summary['type']}?{request['ifNoneExist']}"
    elif "?" in request["url"]:
        summary["match"] = request["url"]
    return summary


def _located(translation: Translation, exc: FHIRError) -> str:
    """The reason a translated input was refused, prefixed with where in the input it
    is when the translator says (a CSV row's line)."""
    where = translation.details.get("where")
    return f"{where}: {_fhir_reason(exc)}" if where else _fhir_reason(exc)


def _fhir_reason(exc: FHIRError) -> str:
    """The FHIRError text with where it happened; diagnostics never echo input values."""
    parts = []
    for issue in exc.issues:
        where = f" at {', '.join(issue.expression)}" if issue.expression else ""
        parts.append(f"{issue.diagnostics}{where}")
    return f"FHIR {exc.status}: " + "; ".join(parts) if parts else f"FHIR {exc.status}"


def _provenance(translation: Translation, digest: str) -> dict[str, Any]:
    source = translation.source
    targets = [{"reference": e["fullUrl"]} for e in translation.bundle["entry"]]
    entities: list[dict[str, Any]] = []
    if source.message_id:
        entities.append({"role": "source", "what": {
            "identifier": {"system": source.message_system, "value": source.message_id},
            "display": f"{source.kind} message {source.message_id}"}})
    entities.append({"role": "source", "what": {
        "identifier": {"system": INPUT_HASH_SYSTEM, "value": digest},
        "display": "raw input as received (inbox)"}})
    who: dict[str, Any] = {"display": source.sender or "unknown sender"}
    if source.sender_ref:
        who["reference"] = source.sender_ref
    provenance: dict[str, Any] = {
        "resourceType": "Provenance",
        "target": targets,
        "recorded": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "activity": {"coding": [{"system": DATA_OPERATION, "code": "UPDATE",
                                 "display": "revise"}]},
        "agent": [{"type": {"coding": [{"system": PARTICIPANT_TYPE, "code": "author",
                                        "display": "Author"}]}, "who": who}],
        "entity": entities,
    }
    if source.occurred:
        provenance["occurredDateTime"] = source.occurred
    return {"fullUrl": "urn:uuid:" + digest[:8] + "-" + digest[8:12] + "-5" + digest[13:16]
            + "-8" + digest[17:20] + "-" + digest[20:32],
            "resource": provenance, "request": {"method": "POST", "url": "Provenance"}}
