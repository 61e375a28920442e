"""FHIRPath expressions of search parameters, compiled into fast getters on JSON dicts.

fhirpathpy takes some 10-20 us per expression, and a resource type has ~30 search
parameters, which would dominate ingest. Nearly all R4 search expressions use a small
subset of FHIRPath, which `compile_path` turns into plain Python:

- dotted paths, unions (`|`), relative paths (`name | alias`),
- type choices: `(X.value as Quantity)`, `X.value.as(Quantity)`, `X.value.ofType(Quantity)`,
  and untyped `X.effective` (any effective[x]),
- `.where(resolve() is Patient)` on references, `.where(system='email')` style filters.

Anything else goes to fhirpathpy with the R4 model (without a model it cannot see
choice elements such as Observation.value). fhirpathpy has no resolve(), so
`resolve() is T` is rewritten to the same reference test the fast path uses.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from functools import cache
from typing import Any

import fhirpathpy
from fhirpathpy.models import models

from conformance.definitions import choice_elements

logger = logging.getLogger(__name__)

Getter = Callable[[dict[str, Any]], list[Any]]
Step = Callable[[list[Any]], list[Any]]

_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
_TYPED = re.compile(rf"\((.+) as ({_IDENT})\)((?:\.{_IDENT})*)")
_AS_CALL = re.compile(rf"(?:as|ofType)\(({_IDENT})\)")
_WHERE_RESOLVE = re.compile(rf"where\(resolve\(\) is ({_IDENT})\)")
_WHERE_EQ = re.compile(rf"where\(({_IDENT}) ?= ?'([^'\\]*)'\)")
_RESOLVE_IS = re.compile(rf"resolve\(\) is ({_IDENT})")
_EXISTS_NOT_FALSE = re.compile(r"(\S+)\.exists\(\) and (\S+) != false")


def _split_top_level(text: str, separator: str) -> list[str]:
    """Split `text` on `separator` where it stands outside parentheses and quotes."""
    parts: list[str] = []
    depth, quoted, start = 0, False, 0
    for i, ch in enumerate(text):
        if ch == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == separator and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def split_union(expression: str) -> list[str]:
    """Split on `|` outside parentheses and quotes."""
    return [p for p in (part.strip() for part in _split_top_level(expression, "|")) if p]


def _split_steps(path: str) -> list[str]:
    return _split_top_level(path, ".")


def reference_is(reference: Any, resource_type: str) -> bool:
    """What `resolve() is T` means here: the Reference points at a T, by a relative or
    absolute Type/id reference or by Reference.type."""
    if not isinstance(reference, dict):
        return False
    target = reference.get("reference")
    if isinstance(target, str) and (
        target.startswith(resource_type + "/") or f"/{resource_type}/" in target
    ):
        return True
    return reference.get("type") == resource_type


def _field(name: str) -> Step:
    suffixes = choice_elements().get(name)
    keys = tuple(name + suffix for suffix in sorted(suffixes)) if suffixes else ()

    def step(values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for value in values:
            if type(value) is not dict:
                continue
            found = value.get(name)
            if found is None:
                for key in keys:
                    found = value.get(key)
                    if found is not None:
                        break
                else:
                    continue
            if type(found) is list:
                out.extend(found)
            else:
                out.append(found)
        return out

    return step


def _typed_field(name: str, type_name: str) -> Step:
    key = name + type_name[0].upper() + type_name[1:]

    def step(values: list[Any]) -> list[Any]:
        out: list[Any] = []
        for value in values:
            if type(value) is dict and (found := value.get(key)) is not None:
                if type(found) is list:
                    out.extend(found)
                else:
                    out.append(found)
        return out

    return step


def _where_resolve(resource_type: str) -> Step:
    return lambda values: [v for v in values if reference_is(v, resource_type)]


def _where_eq(name: str, literal: str) -> Step:
    return lambda values: [v for v in values if type(v) is dict and v.get(name) == literal]


def _compile_steps(texts: Iterable[str], steps: list[Step], names: list[str | None]) -> bool:
    """Append the steps for `texts`; `names` runs beside `steps`, holding the element
    name of each plain field step so that a following as(T) can narrow it."""
    for text in texts:
        if re.fullmatch(_IDENT, text):
            steps.append(_field(text))
            names.append(text)
            continue
        if (match := _AS_CALL.fullmatch(text)) is not None:
            # X.as(T) / X.ofType(T) on the choice element X reads the JSON key X + T.
            if not names or names[-1] is None:
                return False
            steps[-1] = _typed_field(names[-1], match.group(1))
            names[-1] = None
        elif (match := _WHERE_RESOLVE.fullmatch(text)) is not None:
            steps.append(_where_resolve(match.group(1)))
            names.append(None)
        elif (match := _WHERE_EQ.fullmatch(text)) is not None:
            steps.append(_where_eq(match.group(1), match.group(2)))
            names.append(None)
        else:
            return False
    return True


def _compile_part(part: str, resource_type: str) -> list[Step] | None:
    """Steps for one union part, or None if it is outside the fast subset."""
    typed = _TYPED.fullmatch(part)
    texts = _split_steps(typed.group(1) if typed else part)
    if texts[0] in (resource_type, "Resource", "DomainResource"):
        texts = texts[1:]  # the root: the resource itself
    elif texts[0][:1].isupper():
        return None
    steps: list[Step] = []
    names: list[str | None] = []
    if not texts or not _compile_steps(texts, steps, names):
        return None
    if typed is not None:
        # (X.value as Quantity).tail
        if names[-1] is None:
            return None
        steps[-1] = _typed_field(names[-1], typed.group(2))
        names[-1] = None
        tail = [t for t in typed.group(3).split(".") if t]
        if not _compile_steps(tail, steps, names):
            return None
    return steps


def _exists_not_false(expression: str, resource_type: str) -> Getter | None:
    """`X.exists() and X != false` (Patient-deceased): one boolean, true when X is there
    and is not the boolean false (a deceasedDateTime counts as true)."""
    match = _EXISTS_NOT_FALSE.fullmatch(expression)
    if match is None or match.group(1) != match.group(2):
        return None
    path = _fast(match.group(1), resource_type)
    if path is None:
        return None

    def getter(resource: dict[str, Any]) -> list[Any]:
        values = path(resource)
        return [bool(values) and not (len(values) == 1 and values[0] is False)]

    return getter


def _fast(expression: str, resource_type: str) -> Getter | None:
    parts = []
    for text in split_union(expression):
        steps = _compile_part(text, resource_type)
        if steps is None:
            return None
        parts.append(steps)

    def getter(resource: dict[str, Any]) -> list[Any]:
        out: list[Any] = []
        for steps in parts:
            values: list[Any] = [resource]
            for step in steps:
                values = step(values)
                if not values:
                    break
            out.extend(values)
        return out

    return getter


def fhirpathpy_expression(expression: str, resource_type: str) -> str:
    """`expression` as fhirpathpy can run it: resolve() is replaced by the reference test
    of `reference_is`, and `(X as T)` / `X.as(T)` by `X.ofType(T)`.

    FHIRPath's `as` needs a single item on its left, but search expressions such as
    `(Observation.component.value as Quantity)` mean each item, which is `ofType`.
    A `Resource.` root (the common parameters) is written as the resource's own type,
    which fhirpathpy's model needs to match it.
    """
    parts = []
    for part in split_union(expression):
        part = re.sub(r"^(\(?)(?:Resource|DomainResource)\.", rf"\g<1>{resource_type}.", part)
        typed = _TYPED.fullmatch(part)
        if typed is not None:
            part = f"{typed.group(1)}.ofType({typed.group(2)}){typed.group(3)}"
        parts.append(re.sub(rf"\.as\(({_IDENT})\)", r".ofType(\1)", part))
    expression = " | ".join(parts)
    return _RESOLVE_IS.sub(
        lambda m: (
            f"(reference.startsWith('{m.group(1)}/') or reference.contains('/{m.group(1)}/')"
            f" or type = '{m.group(1)}')"
        ),
        expression,
    )


def slow_getter(expression: str, resource_type: str) -> Getter:
    """A getter that evaluates `expression` with fhirpathpy and the R4 model."""
    compiled = fhirpathpy.compile(
        fhirpathpy_expression(expression, resource_type), model=models["r4"]
    )

    warned = False

    def getter(resource: dict[str, Any]) -> list[Any]:
        nonlocal warned
        try:
            return list(compiled(resource, {}))
        except Exception as error:  # noqa: BLE001 - a broken expression must not stop ingest
            # Once per expression, and without the message: it may quote resource content.
            if not warned:
                warned = True
                logger.warning(
                    "FHIRPath evaluation of %s failed (%s); its values are not indexed",
                    expression,
                    type(error).__name__,
                )
            return []

    return getter


@cache
def compile_path(expression: str, resource_type: str) -> tuple[Getter, bool]:
    """A getter returning the values `expression` selects in a resource of
    `resource_type`, and whether it is the fast (pure Python) form."""
    fast = _fast(expression, resource_type) or _exists_not_false(expression, resource_type)
    if fast is not None:
        return fast, True
    return slow_getter(expression, resource_type), False
