"""FHIR errors and the OperationOutcome resources that report them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Issue:
    """One OperationOutcome.issue: severity, code (from the FHIR issue-type value set),
    a message for humans and, where known, the FHIRPath of the offending element."""

    code: str
    diagnostics: str
    severity: str = "error"
    expression: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "severity": self.severity,
            "code": self.code,
            "diagnostics": self.diagnostics,
        }
        if self.expression:
            out["expression"] = list(self.expression)
        return out


def operation_outcome(issues: list[Issue] | tuple[Issue, ...]) -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


@dataclass
class FHIRError(Exception):
    """An error with an HTTP status and the issues to report in an OperationOutcome."""

    status: int
    issues: list[Issue] = field(default_factory=list)

    def __str__(self) -> str:
        return "; ".join(i.diagnostics for i in self.issues) or f"HTTP {self.status}"

    @classmethod
    def simple(
        cls, status: int, code: str, diagnostics: str, expression: str | None = None
    ) -> FHIRError:
        expr = (expression,) if expression else ()
        return cls(status, [Issue(code, diagnostics, expression=expr)])

    def outcome(self) -> dict[str, Any]:
        return operation_outcome(self.issues)


def not_found(resource_type: str, resource_id: str) -> FHIRError:
    return FHIRError.simple(404, "not-found", f"{resource_type}/{resource_id} is not known")


def gone(resource_type: str, resource_id: str) -> FHIRError:
    return FHIRError.simple(410, "deleted", f"{resource_type}/{resource_id} has been deleted")


def conflict(diagnostics: str) -> FHIRError:
    return FHIRError.simple(409, "conflict", diagnostics)


def precondition_failed(diagnostics: str) -> FHIRError:
    return FHIRError.simple(412, "conflict", diagnostics)


def invalid(diagnostics: str, expression: str | None = None, status: int = 400) -> FHIRError:
    return FHIRError.simple(status, "invalid", diagnostics, expression)
