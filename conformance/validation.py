"""Structural validation of incoming R4 resources.

fhir.resources ships R5, R4B and STU3 models but no R4. The R4B models are
nearly identical to R4 for clinical resources, so they validate R4 content
here. Resource types that R4 has and R4B dropped are checked only for being
a JSON object of the right type (see README, "Validation").
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from fhir_server.errors import FHIRError, Issue


@lru_cache(maxsize=None)
def model_class(resource_type: str) -> Any | None:
    try:
        return get_fhir_model_class(resource_type)
    except (KeyError, ValueError, AttributeError, ImportError):
        return None


def _expression(resource_type: str, loc: tuple[Any, ...]) -> str:
    path = resource_type
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif isinstance(part, str) and not part.startswith(("function-", "json-or-python")):
            # pydantic inserts validator names such as "function-after[...]" in loc
            if "[" in part or part in {"list", "dict"}:
                continue
            path += f".{part}"
    return path


def _issue(resource_type: str, error: dict[str, Any]) -> Issue:
    kind = error.get("type", "")
    code = "structure" if kind in {"extra_forbidden", "missing"} else "value"
    if kind == "extra_forbidden":
        message = "Unknown element"
    elif kind == "missing":
        message = "Required element is missing"
    else:
        # pydantic's msg never contains the offending input; the input itself is not echoed.
        message = str(error.get("msg", "Invalid value"))
    return Issue(code, message, expression=(_expression(resource_type, tuple(error.get("loc", ()))),))


def validation_issues(resource: Any, expected_type: str | None = None) -> list[Issue]:
    """Every structural problem of `resource`, each with the FHIRPath of the element."""
    if not isinstance(resource, dict):
        return [Issue("structure", "A resource must be a JSON object")]
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str):
        return [Issue("required", "resourceType is missing", expression=("resourceType",))]
    if expected_type is not None and resource_type != expected_type:
        return [
            Issue(
                "invalid",
                f"resourceType {resource_type} does not match the endpoint type {expected_type}",
                expression=("resourceType",),
            )
        ]
    model = model_class(resource_type)
    if model is None:
        return []
    try:
        model.model_validate(resource)
    except ValidationError as exc:
        return [_issue(resource_type, e) for e in exc.errors(include_input=False, include_url=False)]
    except (TypeError, ValueError) as exc:  # fhir.resources raises these for some shapes
        return [Issue("structure", f"Invalid resource: {type(exc).__name__}")]
    return []


def validate(resource: Any, expected_type: str | None = None) -> None:
    """Raise FHIRError 400 with an OperationOutcome listing every problem."""
    issues = validation_issues(resource, expected_type)
    if issues:
        raise FHIRError(400, issues)
