"""JSON Patch (RFC 6902) applied to a resource, for the FHIR patch interaction
(R4 http.html#patch). Operations add, remove, replace, move, copy and test; paths are
JSON Pointers (RFC 6901). Each error names the operation by its index."""

from __future__ import annotations

import copy
from typing import Any

from fhir_server.errors import FHIRError

_OPS = frozenset({"add", "remove", "replace", "move", "copy", "test"})


def _error(index: int, diagnostics: str, status: int = 400) -> FHIRError:
    code = "processing" if status == 422 else "invalid"
    return FHIRError.simple(status, code, f"Patch operation {index}: {diagnostics}",
                            f"patch[{index}]")


def _tokens(pointer: Any, index: int) -> list[str]:
    if not isinstance(pointer, str) or (pointer and not pointer.startswith("/")):
        raise _error(index, "a path must be a JSON Pointer such as /name/0/family")
    if pointer == "":
        return []
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def _list_index(token: str, size: int, index: int, *, for_add: bool) -> int:
    if for_add and token == "-":
        return size
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise _error(index, "an array index must be a whole number", 422)
    position = int(token)
    if position > size or (position == size and not for_add):
        raise _error(index, "the array index is out of range", 422)
    return position


def _parent(document: Any, tokens: list[str], index: int) -> Any:
    target = document
    for token in tokens[:-1]:
        if isinstance(target, dict) and token in target:
            target = target[token]
        elif isinstance(target, list):
            target = target[_list_index(token, len(target), index, for_add=False)]
        else:
            raise _error(index, "the path does not exist in the resource", 422)
    return target


def _get(document: Any, tokens: list[str], index: int) -> Any:
    if not tokens:
        return document
    parent, last = _parent(document, tokens, index), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent[last]
    if isinstance(parent, list):
        return parent[_list_index(last, len(parent), index, for_add=False)]
    raise _error(index, "the path does not exist in the resource", 422)


def _remove(document: Any, tokens: list[str], index: int) -> Any:
    if not tokens:
        raise _error(index, "the whole resource cannot be removed", 422)
    parent, last = _parent(document, tokens, index), tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_list_index(last, len(parent), index, for_add=False))
    raise _error(index, "the path does not exist in the resource", 422)


def _add(document: Any, tokens: list[str], value: Any, index: int) -> Any:
    if not tokens:
        return value
    parent, last = _parent(document, tokens, index), tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_list_index(last, len(parent), index, for_add=True), value)
    else:
        raise _error(index, "the path does not exist in the resource", 422)
    return document


def apply_patch(resource: dict[str, Any], operations: Any) -> dict[str, Any]:
    """A patched copy of `resource`; raises FHIRError 400 for a malformed patch and 422
    for one that does not apply (a missing path, a failed test)."""
    if not isinstance(operations, list):
        raise FHIRError.simple(400, "structure", "A JSON Patch is an array of operations")
    document: Any = copy.deepcopy(resource)
    for index, operation in enumerate(operations):
        if not isinstance(operation, dict) or operation.get("op") not in _OPS:
            raise _error(index, "op must be add, remove, replace, move, copy or test")
        op = operation["op"]
        path = _tokens(operation.get("path"), index)
        if op in ("add", "replace", "test") and "value" not in operation:
            raise _error(index, f"{op} needs a value")
        if op == "add":
            document = _add(document, path, copy.deepcopy(operation["value"]), index)
        elif op == "remove":
            _remove(document, path, index)
        elif op == "replace":
            _get(document, path, index)
            if path:
                _remove(document, path, index)
            document = _add(document, path, copy.deepcopy(operation["value"]), index)
        elif op == "test":
            if _get(document, path, index) != operation["value"]:
                raise _error(index, "the test failed", 422)
        else:
            source = _tokens(operation.get("from"), index)
            if op == "move" and path[: len(source)] == source and path != source:
                raise _error(index, "a value cannot be moved into itself")
            value = copy.deepcopy(_get(document, source, index))
            if op == "move":
                _remove(document, source, index)
            document = _add(document, path, value, index)
    if not isinstance(document, dict):
        raise FHIRError.simple(422, "processing", "The patch does not leave a resource")
    return document
