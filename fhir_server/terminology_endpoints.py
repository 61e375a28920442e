"""The FHIR terminology operations (R4 terminology-service.html), GET and POST forms:

    [base]/CodeSystem/$lookup                       system, code | coding; displayLanguage
    [base]/CodeSystem[/{id}]/$validate-code         url | codeSystem, code | coding | CC
    [base]/CodeSystem[/{id}]/$subsumes              system, codeA, codeB | codingA/B
    [base]/ValueSet[/{id}]/$expand                  url | valueSet; filter, count, offset...
    [base]/ValueSet[/{id}]/$validate-code           url | valueSet, code+system | coding | CC
    [base]/ConceptMap[/{id}]/$translate             system, code | coding; reverse...
    [base]/OperationDefinition/<name>               their definitions

Errors: an unknown code system, value set or concept map is a 404 OperationOutcome, as
is $lookup of an unknown code; missing or bad parameters are 400. $validate-code answers
a code that is not valid with result=false and a message (200), not an error.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from fhir_server import jsonutil
from fhir_server.errors import FHIRError, Issue
from fhir_server.rest.routes import EndpointGroup, Interaction
from terminology import expand as expansions
from terminology import operation_definitions, resources
from terminology.expand import ExpandRequest, Pins, designation_json
from terminology.parameters import OperationInput, parameters, property_value
from terminology.service import (
    Validation,
    check_display,
    concepts_of,
    terminology_service,
)
from terminology.language import pick_display
from terminology.store import TerminologyError
from terminology.translate import NOT_MATCHING, translate

# BCP 47 in outline: a 2-3 (or up to 8) letter language, then subtags (zh-CN, sr-Latn-RS)
_LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*")

if TYPE_CHECKING:
    from fhir_server.rest.handlers import Handlers


def _missing(name: str) -> FHIRError:
    return FHIRError(
        400, [Issue("required", f"Parameter '{name}' is required", expression=(name,))]
    )


def _pins(values: list[str], where: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for value in values:
        system, sep, version = value.partition("|")
        if not sep or not system or not version:
            raise FHIRError(400, [Issue("invalid", f"'{value}' is not system|version",
                                        expression=(where,))])  # fmt: skip
        out[system] = version
    return out


class TerminologyEndpoints:
    def __init__(self, handlers: Handlers) -> None:
        self._handlers = handlers

    @property
    def _service(self) -> Any:
        return terminology_service(self._handlers.store)

    @property
    def _ctx(self) -> Any:
        return self._handlers.ctx

    async def _input(self, request: Request) -> OperationInput:
        query = list(request.query_params.multi_items())
        if request.method == "POST":
            from fhir_server.rest import http

            return OperationInput.from_parameters(await http.json_body(request), query)
        return OperationInput.from_query(query)

    async def _instance(self, request: Request, resource_type: str) -> dict[str, Any]:
        resource_id = request.path_params["id"]
        stored = await self._handlers.store.read(self._ctx, resource_type, resource_id)
        if stored is None or stored.deleted or stored.resource is None:
            raise FHIRError.simple(
                404, "not-found", f"{resource_type}/{request.path_params['id']} is not known"
            )
        return stored.resource

    @staticmethod
    def _answer(resource: dict[str, Any]) -> Response:
        from fhir_server.rest import http

        return http.json_response(jsonutil.dumps(resource))

    @staticmethod
    def _language(request: Request, given: OperationInput) -> str | None:
        language = given.text("displayLanguage")
        if language is not None and not _LANGUAGE_TAG.fullmatch(language):
            raise FHIRError(400, [Issue(
                "invalid", f"displayLanguage '{language}' is not a language tag (BCP 47, "
                "e.g. en, zh-CN)", expression=("displayLanguage",))])  # fmt: skip
        return language or request.headers.get("accept-language")

    # -- $lookup -----------------------------------------------------------------

    async def lookup(self, request: Request) -> Response:
        given = await self._input(request)
        system, code, version = given.text("system"), given.text("code"), given.text("version")
        coding = given.thing("coding")
        if coding is not None:
            for name, given_value in (("code", code), ("system", system)):
                if given_value is not None and given_value != coding.get(name):
                    raise FHIRError(400, [Issue(
                        "invalid", f"Both coding and {name} are given and they differ "
                        f"('{coding.get(name)}' and '{given_value}'): give one",
                        expression=(name,))])  # fmt: skip
            system, code = coding.get("system"), coding.get("code")
            version = coding.get("version") or version
        if not code:
            raise _missing("code")
        if not system:
            raise _missing("system")
        info, detail = await self._service.lookup(self._ctx, system, code, version)
        wanted = set(given.texts("property"))
        concept = detail.concept
        language = self._language(request, given)
        display = pick_display(concept.display, concept.designations, language)

        def want(name: str) -> bool:
            return not wanted or name in wanted

        props: list[tuple[str, str, Any]] = []
        if concept.definition and want("definition"):
            props.append(("property", "part", [("code", "valueCode", "definition"),
                                               ("value", "valueString", concept.definition)]))
        if want("inactive"):
            props.append(("property", "part", [("code", "valueCode", "inactive"),
                                               ("value", "valueBoolean", not concept.active)]))
        for name, values in concept.properties.items():
            if want(name):
                props.extend(("property", "part", [("code", "valueCode", name),
                                                   ("value", *property_value(v))])
                             for v in values)
        for name, codes in (("parent", concept.parents), ("child", detail.children)):
            if want(name):
                props.extend(("property", "part", [("code", "valueCode", name),
                                                   ("value", "valueCode", c)]) for c in codes)
        designations = [
            ("designation", "part", [
                ("language", "valueCode", d.language),
                ("use", "valueCoding", designation_json(d).get("use")),
                ("value", "valueString", d.value),
            ]) for d in concept.designations
        ] if want("designation") else []  # fmt: skip
        return self._answer(parameters(
            ("name", "valueString", info.name),
            ("version", "valueString", info.version),
            ("display", "valueString", display or concept.code),
            *designations,
            *props,
        ))  # fmt: skip

    # -- CodeSystem/$validate-code -------------------------------------------------

    @staticmethod
    def _codings(given: OperationInput, system_name: str) -> list[tuple[str | None, str, str | None,
                                                                        str | None]]:
        """(system, code, version, display) to check: from code+system, coding or
        codeableConcept (any of whose codings may be valid)."""
        code = given.text("code")
        if code is not None:
            return [(given.text(system_name), code, None, given.text("display"))]
        coding = given.thing("coding")
        if coding is not None:
            return [(coding.get("system"), coding.get("code") or "", coding.get("version"),
                     coding.get("display"))]  # fmt: skip
        concept = given.thing("codeableConcept")
        if concept is not None:
            found = [(c.get("system"), c.get("code") or "", c.get("version"), c.get("display"))
                     for c in concept.get("coding") or [] if isinstance(c, dict)]  # fmt: skip
            if found:
                return found
        raise _missing("code")

    @staticmethod
    def _validation(results: list[Validation]) -> Response:
        best = next((r for r in results if r.result), results[0])
        message = best.message
        if len(results) > 1:  # R4: when true, the message carries hints (a bad coding)
            message = "; ".join(r.message for r in results if r.message) or None
        return TerminologyEndpoints._answer(parameters(
            ("result", "valueBoolean", best.result),
            ("message", "valueString", message),
            ("display", "valueString", best.display),
        ))  # fmt: skip

    async def _validate_cs(
        self, given: OperationInput, resource: dict[str, Any] | None
    ) -> Response:
        url = given.text("url") or (resource or {}).get("url")
        codings = self._codings(given, "url")
        results: list[Validation] = []
        for system, code, version, display in codings:
            system = system or url
            if not system:
                raise _missing("url")
            if url and system != url:
                results.append(Validation(False, f"The coding's system '{system}' is not the "
                                          f"code system '{url}'", None))  # fmt: skip
                continue
            if resource is not None and resource.get("concept"):
                by_code = {c.code: c for c in concepts_of(resource)}
                concept = by_code.get(code)
                results.append(
                    check_display(concept, display, system, resource.get("version"))
                    if concept else Validation(
                        False, f"Unknown code '{code}' in code system '{system}'", None)
                )  # fmt: skip
                continue
            results.append(await self._service.validate_code(
                self._ctx, system, code, version or given.text("version"), display
            ))  # fmt: skip
        return self._validation(results)

    async def validate_code_system(self, request: Request) -> Response:
        given = await self._input(request)
        return await self._validate_cs(given, given.thing("codeSystem"))

    async def validate_code_system_instance(self, request: Request) -> Response:
        given = await self._input(request)
        return await self._validate_cs(given, await self._instance(request, "CodeSystem"))

    # -- $subsumes ----------------------------------------------------------------------

    async def _subsumes(self, given: OperationInput, url: str | None) -> Response:
        system = given.text("system") or url
        codes: list[str] = []
        for name in ("A", "B"):
            code = given.text(f"code{name}")
            coding = given.thing(f"coding{name}")
            if coding is not None:
                if coding.get("system") and system and coding["system"] != system:
                    raise FHIRError(400, [Issue("invalid", f"coding{name} is not of {system}",
                                                expression=(f"coding{name}",))])  # fmt: skip
                system = system or coding.get("system")
                code = coding.get("code")
            if not code:
                raise _missing(f"code{name}")
            codes.append(code)
        if not system:
            raise _missing("system")
        outcome = await self._service.subsumes(self._ctx, system, codes[0], codes[1],
                                               given.text("version"))  # fmt: skip
        return self._answer(parameters(("outcome", "valueCode", outcome)))

    async def subsumes(self, request: Request) -> Response:
        return await self._subsumes(await self._input(request), None)

    async def subsumes_instance(self, request: Request) -> Response:
        resource = await self._instance(request, "CodeSystem")
        return await self._subsumes(await self._input(request), resource.get("url"))

    # -- ValueSet/$expand ---------------------------------------------------------------

    async def _value_set(self, given: OperationInput) -> dict[str, Any]:
        resource = given.thing("valueSet")
        if resource is not None:
            if resource.get("resourceType") != "ValueSet":
                raise FHIRError(400, [Issue("invalid", "Parameter 'valueSet' must be a ValueSet",
                                            expression=("valueSet",))])  # fmt: skip
            return resource
        url = given.text("url")
        if not url:
            raise _missing("url")
        version = given.text("valueSetVersion")
        canonical = f"{url}|{version}" if version and "|" not in url else url
        return await expansions.find_value_set(self._service, self._ctx, canonical)

    def _expand_request(self, request: Request, given: OperationInput) -> ExpandRequest:
        pins = Pins(_pins(given.texts("system-version"), "system-version"),
                    _pins(given.texts("force-system-version"), "force-system-version"))
        return ExpandRequest(
            text=given.text("filter"),
            offset=given.integer("offset", 0) or 0,
            count=given.integer("count", None, high=expansions.MAX_UNPAGED),
            active_only=given.flag("activeOnly"),
            language=self._language(request, given),
            include_designations=given.flag("includeDesignations"),
            pins=pins,
            exclude_systems=tuple(given.texts("exclude-system")),
        )  # fmt: skip

    async def expand(self, request: Request) -> Response:
        given = await self._input(request)
        value_set = await self._value_set(given)
        expanded = await expansions.expand(self._service, self._ctx, value_set,
                                           self._expand_request(request, given))  # fmt: skip
        return self._answer(expanded)

    async def expand_instance(self, request: Request) -> Response:
        given = await self._input(request)
        value_set = await self._instance(request, "ValueSet")
        expanded = await expansions.expand(self._service, self._ctx, value_set,
                                           self._expand_request(request, given))  # fmt: skip
        return self._answer(expanded)

    # -- ValueSet/$validate-code ---------------------------------------------------------

    async def _validate_vs(self, given: OperationInput, value_set: dict[str, Any]) -> Response:
        results: list[Validation] = []
        name = value_set.get("url") or "the value set"
        for system, code, version, display in self._codings(given, "system"):
            version = version or given.text("systemVersion")
            pins = Pins(force={system: version}) if system and version else Pins()
            found = await expansions.contains(self._service, self._ctx, value_set, system, code,
                                              pins)  # fmt: skip
            if found is None:
                where = f"'{system}#{code}'" if system else f"'{code}'"
                results.append(Validation(False, f"The code {where} is not in the value set "
                                          f"'{name}'", None))  # fmt: skip
                continue
            info = await self._service.find_code_system(self._ctx, found.system, found.version)
            detail = await self._service.concepts.concept(self._ctx, info, found.code) if info \
                else None
            if detail is not None:
                results.append(check_display(detail.concept, display, found.system,
                                             found.version))  # fmt: skip
            elif display is not None and found.display and display != found.display:
                results.append(Validation(
                    False, f"The display '{display}' is not a valid display for the code "
                    f"'{code}'; the display is '{found.display}'", found.display))  # fmt: skip
            else:
                results.append(Validation(True, None, found.display))
        return self._validation(results)

    async def validate_value_set(self, request: Request) -> Response:
        given = await self._input(request)
        return await self._validate_vs(given, await self._value_set(given))

    async def validate_value_set_instance(self, request: Request) -> Response:
        given = await self._input(request)
        return await self._validate_vs(given, await self._instance(request, "ValueSet"))

    # -- ConceptMap/$translate -------------------------------------------------------------

    async def _translate(self, given: OperationInput, map_url: str | None) -> Response:
        system, code = given.text("system"), given.text("code")
        coding = given.thing("coding") or next(
            iter((given.thing("codeableConcept") or {}).get("coding") or []), None
        )
        if coding is not None:
            system, code = coding.get("system"), coding.get("code")
        if not code:
            raise _missing("code")
        if not system:
            raise _missing("system")
        url = given.text("url") or map_url
        if map_url is None and url is not None and not await resources.find(
            self._handlers.store, self._ctx, "ConceptMap", *resources.split_canonical(url)
        ):
            raise FHIRError.simple(404, "not-found", f"The concept map {url} is not known", "url")
        matches = await translate(
            self._handlers.store, self._ctx, system=system, code=code,
            source=given.text("source"), target=given.text("target"),
            reverse=given.flag("reverse"), url=url, target_system=given.text("targetsystem"),
        )  # fmt: skip
        result = any(m.equivalence not in NOT_MATCHING for m in matches)
        message = None if matches else f"No mapping found for code '{code}' of '{system}'"
        return self._answer(parameters(
            ("result", "valueBoolean", result),
            ("message", "valueString", message),
            *(("match", "part", [
                ("equivalence", "valueCode", m.equivalence),
                ("concept", "valueCoding", {k: v for k, v in (
                    ("system", m.system), ("code", m.code), ("display", m.display)) if v}
                 if m.code else None),
                ("source", "valueUri", m.concept_map),
            ]) for m in matches),
        ))  # fmt: skip

    async def translate(self, request: Request) -> Response:
        return await self._translate(await self._input(request), None)

    async def translate_instance(self, request: Request) -> Response:
        resource = await self._instance(request, "ConceptMap")
        return await self._translate(
            await self._input(request), resource.get("url") or f"ConceptMap/{resource.get('id')}"
        )

    # -- OperationDefinitions -----------------------------------------------------------

    async def definition(self, request: Request) -> Response:
        from fhir_server.rest import http

        name = request.url.path.rstrip("/").rsplit("/", 1)[-1]  # one literal route per name
        base = http.base_url(request, self._handlers.base_path)
        found = operation_definitions.definition(name, base)
        if found is None:
            raise FHIRError.simple(404, "not-found", f"OperationDefinition/{name} is not known")
        return self._answer(found)


def _definition_routes() -> tuple[Interaction, ...]:
    names = (*operation_definitions.DEFINITIONS, *operation_definitions.SHORT, "validate-code")
    return tuple(
        Interaction("GET", f"/OperationDefinition/{name}", "definition_" + name.replace("-", "_"),
                    (), "instance")
        for name in names
    )


class _Endpoints(TerminologyEndpoints):
    def __getattr__(self, name: str) -> Any:
        # definition_<name> handlers: one route per OperationDefinition id
        if name.startswith("definition_"):
            return self.definition
        raise AttributeError(name)


def _operation(method: str, path: str, handler: str, code: str, level: str) -> Interaction:
    return Interaction(method, path, handler, (code,), level)  # type: ignore[arg-type]


def _both(path: str, handler: str, code: str, level: str) -> tuple[Interaction, Interaction]:
    return (_operation("GET", path, handler, code, level),
            _operation("POST", path, handler, code, level))  # fmt: skip


ENDPOINTS = EndpointGroup(
    (
        *_both("/CodeSystem/$lookup", "lookup", "$lookup", "type"),
        *_both("/CodeSystem/$validate-code", "validate_code_system", "$validate-code", "type"),
        *_both("/CodeSystem/{id}/$validate-code", "validate_code_system_instance",
               "$validate-code", "instance"),
        *_both("/CodeSystem/$subsumes", "subsumes", "$subsumes", "type"),
        *_both("/CodeSystem/{id}/$subsumes", "subsumes_instance", "$subsumes", "instance"),
        *_both("/ValueSet/$expand", "expand", "$expand", "type"),
        *_both("/ValueSet/{id}/$expand", "expand_instance", "$expand", "instance"),
        *_both("/ValueSet/$validate-code", "validate_value_set", "$validate-code", "type"),
        *_both("/ValueSet/{id}/$validate-code", "validate_value_set_instance", "$validate-code",
               "instance"),
        *_both("/ConceptMap/$translate", "translate", "$translate", "type"),
        *_both("/ConceptMap/{id}/$translate", "translate_instance", "$translate", "instance"),
        *_definition_routes(),
    ),
    _Endpoints,
)

__all__ = ["ENDPOINTS", "TerminologyError"]
