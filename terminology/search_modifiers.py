"""Token search modifiers answered by the terminology service (R4 search.html#token):

    code:in=<ValueSet url>        the code is in the value set's expansion
    code:not-in=<ValueSet url>    no coding of the resource is in it
    code:below=<system>|<code>    the code or one of its descendants (is-a)
    code:above=<system>|<code>    the code or one of its ancestors

`resolve` rewrites such clauses into plain token clauses (`:not-in` into `:not`) over
the codes of the expansion or hierarchy, before the store plans the search; a store
calls it at the start of a search (SQLiteStore.search, MongoStore.search). More than
MAX_CODES codes is a 400 too-costly.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from fhir_server.errors import FHIRError, Issue
from search.query import Clause, SearchQuery, TokenTerm, UriTerm
from terminology.store import TerminologyError

if TYPE_CHECKING:
    from fhir_server.storage.base import Context, ResourceStore

MODIFIERS = frozenset({"in", "not-in", "above", "below"})
MAX_CODES = 10_000
# A token no resource carries: what `:in` an empty value set matches.
_NOTHING = TokenTerm("", "urn:fhir-fusion:no-code", "")


def _error(clause: Clause, diagnostics: str, code: str = "invalid") -> FHIRError:
    return FHIRError(400, [Issue(code, diagnostics, expression=(clause.name,))])


def needs_terminology(query: SearchQuery) -> bool:
    return any(c.param_type == "token" and c.modifier in MODIFIERS for c in query.clauses)


def refuse_without_terminology(query: SearchQuery) -> None:
    """400 naming the clause for a search that `resolve` did not see (MongoDB: a search
    inside a transaction, as SQLite refuses it): it would otherwise match the modifier's
    value as a plain code and find nothing."""
    for c in query.clauses:
        if c.param_type == "token" and c.modifier in MODIFIERS:
            raise FHIRError(400, [Issue(
                "not-supported", f"'{c.name}': token :in, :not-in, :above and :below are "
                "not supported inside a transaction", expression=(c.name,))])


async def _codes(store: ResourceStore, ctx: Context, clause: Clause) -> set[tuple[str, str]]:
    from terminology.service import terminology_service

    service = terminology_service(store)
    pairs: set[tuple[str, str]] = set()
    for term in clause.terms:
        if clause.modifier in ("in", "not-in"):
            value = term.value if isinstance(term, UriTerm) else getattr(term, "raw", "")
            try:
                pairs |= await service.codes(ctx, value)
            except TerminologyError as exc:
                if exc.issues and exc.issues[0].code == "too-costly":  # a bounded regex filter
                    raise FHIRError(exc.status, [Issue(
                        "too-costly", str(exc), expression=(clause.name,))]) from None
                raise _error(clause, str(exc), "not-found") from None
            continue
        if not isinstance(term, TokenTerm) or not term.system or not term.code:
            raise _error(clause, f"'{clause.name}' takes system|code")
        related = (
            await service.below(ctx, term.system, term.code)
            if clause.modifier == "below"
            else await service.above(ctx, term.system, term.code)
        )
        if related is None:
            raise _error(clause, f"The code system {term.system} is not known", "not-found")
        if not related:  # not even the code itself: it is not in the system
            raise _error(clause, f"The code '{term.code}' is not in code system "
                         f"{term.system}", "not-found")  # fmt: skip
        pairs |= {(term.system, code) for code in related}
        if len(pairs) > MAX_CODES:
            break
    if len(pairs) > MAX_CODES:
        raise _error(
            clause, f"'{clause.name}' stands for more than {MAX_CODES} codes", "too-costly"
        )
    return pairs


async def resolve(store: ResourceStore, ctx: Context, query: SearchQuery) -> SearchQuery:
    """`query` with its terminology modifiers replaced by the codes they stand for."""
    if not needs_terminology(query):
        return query
    clauses: list[Clause] = []
    for clause in query.clauses:
        if clause.param_type != "token" or clause.modifier not in MODIFIERS:
            clauses.append(clause)
            continue
        pairs = await _codes(store, ctx, clause)
        terms = tuple(TokenTerm(f"{s}|{c}", s, c) for s, c in sorted(pairs))
        if clause.modifier == "not-in":
            if terms:  # an empty value set excludes nothing
                clauses.append(replace(clause, modifier="not", terms=terms))
            continue
        clauses.append(replace(clause, modifier=None, terms=terms or (_NOTHING,)))
    return replace(query, clauses=tuple(clauses))
