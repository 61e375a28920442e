"""How the MongoDB store lays out its documents: collection names, the fields of a
resource, version and input document, and the conversions to the storage interface.

Shared by the store (mongodb.py) and the search compiler (mongodb_search.py), which
reads resource documents and must agree on their shape.

resources (one document per resource, its current version or its delete marker)::

    {_id: ObjectId (made at the first write, kept by later versions), tenant, type, id,
     version, lastUpdated, deleted, pc: "<patient id>" | "~<type>/<id>",
     body: Binary(JSON) | None,
     idx: {index entries} ({} on a delete marker)}

    unique on (tenant, type, id); mongodb_search.py pages by _id, as SQLite by rid

history (one document per version, the current one included)::

    {_id: "<tenant>/<type>/<id>/<version>", tenant, type, id, version, lastUpdated,
     deleted, method, pc, body}

`body` is the resource JSON exactly as answered (jsonutil.dumps), so decimals keep
their digits and a read is answered without re-serialising. `pc` is the patient
compartment the resource belongs to (the Patient's own id, or the Patient its
subject/patient reference names): with the tenant it is the shard key (README, "At
scale"), so a patient's record lives on one shard. A resource in no Patient's
compartment (Organization, Practitioner, Medication, a Device's Observation, ...) gets
"~<type>/<id>" instead (`placement`): its own value, so such resources spread over
chunks MongoDB can split, rather than all sharing one null per tenant that no split
can divide (review-mongo #4). "~" is not an id character, so it never equals a
patient id; nothing but sharding reads `pc` (compartment searches use the reference
index entries). `idx` holds the search index
entries (mongodb_search.index_entries) that compound multikey indexes serve.
"""

from __future__ import annotations

from typing import Any

from fhir_server.storage.base import RawInput, StoredResource

RESOURCES = "resources"
HISTORY = "history"
INPUTS = "inputs"
COUNTERS = "counters"
# additions to the per-feed counters (Transaction.count_feed), summed when read
FEED_COUNTS = "feed_counts"
# one document per normalised conditional-create criteria, written inside the
# transaction that creates: two transactions creating for the same criteria conflict
CLAIMS = "claims"
# leases taken outside the transaction so that such requests wait for each other
# instead of failing with a write conflict
CLAIM_LEASES = "claim_leases"
# written in the same transaction as the resource by the search-index engine's hook
OUTBOX = "outbox"

# The top-level elements whose Patient reference places a resource in that patient's
# compartment for sharding (a subset of the R4 Patient CompartmentDefinition: the
# element most types use; search still uses the full definition).
_PATIENT_LINKS = ("subject", "patient", "beneficiary", "individual")


def resource_filter(tenant: str, resource_type: str, resource_id: str) -> dict[str, str]:
    """The query for one resource document (the unique index by_type_id serves it)."""
    return {"tenant": tenant, "type": resource_type, "id": resource_id}


def version_key(tenant: str, resource_type: str, resource_id: str, version: int) -> str:
    return f"{tenant}/{resource_type}/{resource_id}/{version}"


def patient_compartment(resource: dict[str, Any] | None) -> str | None:
    """The id of the Patient whose record holds this resource, when one is named."""
    if resource is None:
        return None
    if resource.get("resourceType") == "Patient":
        value = resource.get("id")
        return value if isinstance(value, str) else None
    for element in _PATIENT_LINKS:
        link = resource.get(element)
        if isinstance(link, dict):
            reference = link.get("reference")
            if isinstance(reference, str) and reference.startswith("Patient/"):
                return reference[len("Patient/"):]
    return None


def placement(resource: dict[str, Any]) -> str:
    """The `pc` (shard key part) of a resource version: its patient compartment, else
    "~<type>/<id>", fixed by the type and id (see the module docstring)."""
    compartment = patient_compartment(resource)
    if compartment is not None:
        return compartment
    return f"~{resource['resourceType']}/{resource['id']}"


def stored_from_document(doc: dict[str, Any]) -> StoredResource:
    """A resources or history document as the storage interface's StoredResource."""
    deleted = bool(doc["deleted"])
    method = doc.get("method") or ("DELETE" if deleted else "POST" if doc["version"] == 1 else "PUT")
    body = doc.get("body")
    return StoredResource(
        doc["type"], doc["id"], doc["version"], doc["lastUpdated"], deleted,
        None if body is None else bytes(body), method,
    )


def input_from_document(doc: dict[str, Any]) -> RawInput:
    from fhir_server import jsonutil

    result = doc.get("result")
    return RawInput(
        doc["_id"], doc["feed"], doc["receivedAt"], bytes(doc["content"]), doc["contentHash"],
        doc["status"], doc.get("reason"), jsonutil.loads(bytes(result)) if result else None,
    )
