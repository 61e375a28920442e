"""HL7v2 -> FHIR translation, checked on the shared sample messages with concrete values.

Every message under shared/samples/hl7v2 is either translated (test_translated_samples
and the per-message tests) or refused with the reason stated in REFUSED.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from adapters.hl7v2.errors import Hl7Error
from adapters.hl7v2.translate import translate_bytes
from conformance.validation import validation_issues

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
HL7 = SAMPLES / "hl7v2"

TRANSLATED = {
    "fhirconverter_ADT-A01-01.hl7", "fhirconverter_ADT-A03-01.hl7",
    "fhirconverter_ADT-A40-01.hl7", "fhirconverter_ADT01-23.hl7", "fhirconverter_ADT01-28.hl7",
    "fhirconverter_ADT04-251.hl7", "fhirconverter_LAB-ORU-1.hl7",
    "fhirconverter_LRI_2.0-NG_CBC_Typ_Message.hl7", "fhirconverter_ORU-R01-01.hl7",
    "google_adt_a01_ex1.hl7", "google_oru_r01_ex6.hl7", "hapi_adt_a03.hl7",
    "lfh_ORU-multiline-short.hl7", "lfh_sample_unix.hl7",
}
# file -> (MSA-1, table 0357 code, words of the reason)
REFUSED = {
    "fhirconverter_DFT-P03-01.hl7": ("AR", "200", "Message type DFT is not supported"),
    "fhirconverter_IZ_1_1.1_Admin_Child_Max_Message.hl7":
        ("AR", "200", "Message type VXU is not supported"),
    "fhirconverter_MDM-T02-01.hl7": ("AR", "200", "Message type MDM is not supported"),
    "fhirconverter_OML-O21-01.hl7": ("AR", "200", "Message type OML is not supported"),
    "fhirconverter_ORM-O01-01.hl7": ("AR", "200", "Message type ORM is not supported"),
    "fhirconverter_PC1-Problem-Add-v2.3.1.hl7": ("AR", "200", "Message type PPR is not supported"),
    "fhirconverter_RDE-O11-01.hl7": ("AR", "200", "Message type RDE is not supported"),
    "fhirconverter_SIU-S12-01.hl7": ("AR", "200", "Message type SIU is not supported"),
    "fhirconverter_VXU-V04-01.hl7": ("AR", "200", "Message type VXU is not supported"),
    "hapi_omd_o03.hl7": ("AR", "200", "Message type OMD is not supported"),
    "mirth_test-hl7-input.hl7": ("AR", "200", "Message type ORM is not supported"),
    "v2tofhir_MDM_T02.hl7": ("AR", "200", "Message type MDM is not supported"),
}


def bundle_of(name: str) -> dict[str, Any]:
    return translate_bytes((HL7 / name).read_bytes()).bundle


def resources(bundle: dict[str, Any], rtype: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == rtype]


def entry_of(bundle: dict[str, Any], resource: dict[str, Any]) -> dict[str, Any]:
    return next(e for e in bundle["entry"] if e["resource"] is resource)


def one(bundle: dict[str, Any], rtype: str) -> dict[str, Any]:
    found = resources(bundle, rtype)
    assert len(found) == 1, f"{len(found)} {rtype}"
    return found[0]


def by_loinc(bundle: dict[str, Any], code: str) -> dict[str, Any]:
    return next(o for o in resources(bundle, "Observation")
                if o["code"]["coding"][0]["code"] == code)


def test_every_sample_is_either_translated_or_refused() -> None:
    assert {p.name for p in HL7.glob("*.hl7")} == TRANSLATED | set(REFUSED)


@pytest.mark.parametrize("name", sorted(TRANSLATED))
def test_translated_samples_are_valid_r4_transactions(name: str) -> None:
    bundle = bundle_of(name)
    assert bundle["type"] == "transaction"
    assert bundle["entry"][0]["resource"]["resourceType"] == "MessageHeader"
    urls = [e["fullUrl"] for e in bundle["entry"]]
    assert len(set(urls)) == len(urls)
    for entry in bundle["entry"]:
        assert validation_issues(entry["resource"]) == [], entry["resource"]["resourceType"]
    # translating twice gives the same Bundle (deterministic fullUrls, conditional keys)
    assert bundle_of(name) == bundle


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_unsupported_samples_are_refused_with_a_reason(name: str) -> None:
    ack_code, code, words = REFUSED[name]
    with pytest.raises(Hl7Error, match=words) as info:
        translate_bytes((HL7 / name).read_bytes())
    assert (info.value.ack_code, info.value.code) == (ack_code, code)
    assert str(info.value.location) == "MSH-9.1"


def test_adt_a01_v28_patient() -> None:
    bundle = bundle_of("fhirconverter_ADT-A01-01.hl7")
    patient = one(bundle, "Patient")
    values = [(i["system"], i["value"]) for i in patient["identifier"]]
    # PID-3 first (CX-4 namespace test1: its universal id type HCD is not ISO), then
    # PID-2 and PID-4, then the SSN from PID-19
    assert values[:2] == [("urn:fhir-fusion:hl7v2:authority:test1", "PATID1234"),
                          ("http://hl7.org/fhir/sid/us-ssn", "123456789")]
    assert ("urn:fhir-fusion:hl7v2:authority:test", "1234567") in values
    assert ("urn:fhir-fusion:hl7v2:authority:test2", "PATID567") in values
    assert ("http://hl7.org/fhir/sid/us-ssn", "PSSN123121234") in values
    assert entry_of(bundle, patient)["request"] == {
        "method": "PUT",
        "url": "Patient?identifier=urn%3Afhir-fusion%3Ahl7v2%3Aauthority%3Atest1|PATID1234",
    }
    assert patient["name"][0] == {"use": "usual", "family": "EVERYMAN", "given": ["ADAM", "A"],
                                  "prefix": ["Dr."], "suffix": ["III", "MD"]}
    assert patient["name"][1] == {"use": "official", "family": "Josh", "given": ["stanley"]}
    assert patient["gender"] == "male"
    assert patient["birthDate"] == "1988-08-18"
    assert patient["extension"][0]["valueDateTime"] == "1988-08-18T11:26:00+02:15"
    assert patient["deceasedDateTime"] == "2008-08-25T11:16:30+01:15"
    assert patient["address"][0]["line"] == ["1000 Hospital Lane", "Ste. 123"]
    assert patient["address"][0]["city"] == "Ann Arbor"
    assert patient["maritalStatus"]["coding"][0]["code"] == "M"
    assert patient["multipleBirthInteger"] == 2


def test_adt_a01_v28_encounter() -> None:
    bundle = bundle_of("fhirconverter_ADT-A01-01.hl7")
    encounter = one(bundle, "Encounter")
    assert encounter["status"] == "in-progress"
    assert encounter["class"]["code"] == "PRENC"  # PV1-2 P, pre-admit
    assert encounter["identifier"][0]["value"] == "40007716"
    assert encounter["period"] == {"start": "2015-02-08T11:34:19+01:10"}
    attender = encounter["participant"][0]
    assert attender["type"][0]["coding"][0]["code"] == "ATND"
    assert attender["individual"]["display"] == "Dr. Mohammed Mahi Alaz"
    practitioner = next(p for p in resources(bundle, "Practitioner")
                        if p["identifier"][0]["value"] == "1122334")
    assert entry_of(bundle, practitioner)["fullUrl"] == attender["individual"]["reference"]
    assert encounter["subject"]["reference"] == entry_of(bundle, one(bundle, "Patient"))["fullUrl"]
    header = one(bundle, "MessageHeader")
    assert header["eventCoding"]["code"] == "A01"
    assert header["source"]["name"] == "ADTApp"
    organization = one(bundle, "Organization")
    assert organization["identifier"][0]["value"] == "urn:oid:2.16.840.1.122848.1.30"


def test_adt_v23_with_bom_and_offsets() -> None:
    bundle = bundle_of("fhirconverter_ADT01-23.hl7")
    patient = one(bundle, "Patient")
    assert patient["identifier"][0] == {
        "system": "urn:fhir-fusion:hl7v2:authority:1", "value": "10006579",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                             "code": "MR"}]}}
    assert patient["name"] == [{"family": "DUCK", "given": ["DONALD", "D"]}]
    assert patient["birthDate"] == "1924-10-10"
    assert patient["telecom"] == [{"system": "phone", "value": "8885551212", "use": "home"},
                                  {"system": "phone", "value": "8885551212", "use": "work"}]
    encounter = one(bundle, "Encounter")
    assert encounter["class"]["code"] == "IMP"
    assert encounter["identifier"][0]["system"] == "urn:fhir-fusion:hl7v2:authority:AccMgr"
    assert encounter["identifier"][0]["value"] == "40007716"
    assert encounter["period"]["start"] == "2005-01-10T04:55:02+07:00"
    assert encounter["participant"][0]["individual"]["display"] == "WALT DISNEY"


def test_adt_a03_discharge_finishes_the_encounter() -> None:
    bundle = bundle_of("hapi_adt_a03.hl7")
    encounter = one(bundle, "Encounter")
    assert encounter["status"] == "finished"
    assert encounter["identifier"][0]["value"] == "2008003369"
    assert encounter["period"] == {"end": "2008-03-03T15:08:00+00:00"}
    patient = one(bundle, "Patient")
    # the empty "^^^^TEAM" repetition carries no id and is not an identifier
    # the same value under two authorities (CF and SSN) is two identifiers
    assert [i["value"] for i in patient["identifier"]] == [
        "5520255", "ZZZZZZ83M64Z148R", "ZZZZZZ83M64Z148R"]
    assert [i["system"] for i in patient["identifier"]] == [
        "urn:fhir-fusion:hl7v2:authority:PK", "urn:fhir-fusion:hl7v2:authority:CF",
        "urn:fhir-fusion:hl7v2:authority:SSN"]


def test_adt_a04_registration_minimal_v251() -> None:
    bundle = bundle_of("fhirconverter_ADT04-251.hl7")
    patient = one(bundle, "Patient")
    # CX-4 is empty: the identifier is scoped to the sender (MSH-4 RDX)
    assert patient["identifier"][0]["system"] == "urn:fhir-fusion:hl7v2:authority:RDX"
    assert patient["identifier"][0]["value"] == "MRN12345"
    assert patient["name"] == [{"family": "Doe", "given": ["Jane"]}]
    assert patient["gender"] == "female"
    encounter = one(bundle, "Encounter")
    assert encounter["class"]["code"] == "EMER"
    assert encounter["status"] == "arrived"
    assert encounter["period"] == {"start": "2019-05-04T18:12:05+07:00"}
    assert entry_of(bundle, encounter)["request"] == {"method": "POST", "url": "Encounter"}


def test_a40_merge_links_both_patients() -> None:
    bundle = bundle_of("fhirconverter_ADT-A40-01.hl7")
    survivor, replaced = resources(bundle, "Patient")
    survivor_url = entry_of(bundle, survivor)["fullUrl"]
    replaced_url = entry_of(bundle, replaced)["fullUrl"]
    assert survivor["identifier"][0]["value"] == "12345"
    assert survivor["active"] is True
    assert survivor["link"] == [{"other": {"reference": replaced_url}, "type": "replaces"}]
    assert replaced["identifier"][0]["value"] == "56789"
    assert replaced["active"] is False
    assert replaced["link"] == [{"other": {"reference": survivor_url}, "type": "replaced-by"}]
    assert entry_of(bundle, replaced)["request"]["url"] == (
        "Patient?identifier=urn%3Afhir-fusion%3Ahl7v2%3Aauthority%3ABCBS|56789")
    # the pipeline lays the replaced patient over its stored version
    translation = translate_bytes((HL7 / "fhirconverter_ADT-A40-01.hl7").read_bytes())
    assert translation.details["keep_existing"] == [replaced_url]


def test_lab_oru_two_reports_with_pending_results() -> None:
    bundle = bundle_of("fhirconverter_LAB-ORU-1.hl7")
    reports = resources(bundle, "DiagnosticReport")
    assert [r["code"]["coding"][0]["code"] for r in reports] == ["24317-0", "26464-8"]
    assert reports[0]["status"] == "final"
    fill = [i for i in reports[0]["identifier"] if i["type"]["coding"][0]["code"] == "FILL"]
    assert fill[0]["value"] == "82503246"
    assert len(reports[0]["result"]) == 5 and len(reports[1]["result"]) == 5
    erythrocytes = by_loinc(bundle, "11273-0")
    assert erythrocytes["valueQuantity"] == {"value": Decimal("4.06"), "unit": "tera.l-1"}
    assert erythrocytes["status"] == "preliminary"
    assert erythrocytes["effectiveDateTime"] == "2014-10-06T06:27:00+07:00"
    assert erythrocytes["interpretation"][0]["coding"][0]["code"] == "N"
    leukocytes = by_loinc(bundle, "11156-7")  # OBX-11 I: result pending, no value yet
    assert leukocytes["status"] == "registered"
    assert not any(k.startswith("value") for k in leukocytes)
    hematocrit = by_loinc(bundle, "20570-8")
    assert hematocrit["valueQuantity"] == {"value": Decimal("40.1"), "unit": "%",
                                           "system": "http://unitsofmeasure.org", "code": "%"}
    assert entry_of(bundle, hematocrit)["request"]["url"].endswith("|82503246-obx4")
    # lab results never overwrite demographics: the patient is a conditional create
    patient_entry = entry_of(bundle, one(bundle, "Patient"))
    assert patient_entry["request"]["method"] == "POST"
    assert patient_entry["request"]["ifNoneExist"].endswith("|10006579")


def test_lri_cbc_values_units_ranges_and_flags() -> None:
    bundle = bundle_of("fhirconverter_LRI_2.0-NG_CBC_Typ_Message.hl7")
    assert len(resources(bundle, "Observation")) == 28
    report = one(bundle, "DiagnosticReport")
    assert report["code"]["coding"][0] == {"system": "http://loinc.org", "code": "57021-8",
                                           "display": "CBC W Auto Differential panel in Blood"}
    assert report["effectiveDateTime"] == "2011-01-03T14:34:28-08:00"
    assert report["issued"] == "2011-01-04T17:00:28-08:00"
    wbc = by_loinc(bundle, "26464-8")
    assert wbc["valueQuantity"] == {
        "value": Decimal("105600"), "unit": "cells per microliter",
        "system": "http://unitsofmeasure.org", "code": "{cells}/uL",
        # 105600 per microliter = 105.6 x 10^9 per litre (terminology/standardise.py)
        "extension": [{"url": "http://fhir-fusion.org/StructureDefinition/canonical-quantity",
                       "valueQuantity": {"value": Decimal("105.600"), "unit": "10*9/L",
                                         "system": "http://unitsofmeasure.org",
                                         "code": "10*9/L"}}]}
    assert wbc["interpretation"][0]["coding"][0] == {
        "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation",
        "code": "HH", "display": "Critical high"}
    assert wbc["referenceRange"][0]["low"]["value"] == Decimal("4300")
    assert wbc["referenceRange"][0]["high"]["value"] == Decimal("10800")
    assert wbc["referenceRange"][0]["high"]["code"] == "{cells}/uL"
    monocytes = by_loinc(bundle, "26484-6")
    assert str(monocytes["referenceRange"][0]["low"]["value"]) == "0.0"  # precision kept
    aniso = by_loinc(bundle, "38892-6")
    assert aniso["valueCodeableConcept"] == {
        "coding": [{"system": "http://snomed.info/sct", "code": "260348001",
                    "display": "Present ++ out of ++++"}],
        "text": "Moderate Anisocytosis"}
    morphology = by_loinc(bundle, "6742-1")
    assert morphology["valueString"] == "Many spherocytes present."
    assert morphology["interpretation"][0]["coding"][0]["code"] == "A"


def test_oru_v23_local_codes_decimal_precision_and_comparator() -> None:
    bundle = bundle_of("google_oru_r01_ex6.hl7")
    observations = resources(bundle, "Observation")
    potassium = observations[0]
    assert potassium["code"]["coding"][0] == {
        "system": "urn:fhir-fusion:hl7v2:codesystem:WinPath", "code": "tt-0003-02",
        "display": "Potassium"}
    assert str(potassium["valueQuantity"]["value"]) == "5.10"
    assert potassium["valueQuantity"]["unit"] == "MMOLL"
    assert "system" not in potassium["valueQuantity"]  # MMOLL is not a UCUM code
    assert potassium["referenceRange"][0]["low"]["value"] == Decimal("3.5")
    assert potassium["referenceRange"][0]["high"]["value"] == Decimal("5.3")
    assert potassium["effectiveDateTime"] == "2020-05-08T13:06:44+00:00"  # no offset: UTC
    egfr = observations[3]
    assert egfr["valueQuantity"] == {"value": Decimal("15"), "unit": "MLMIN", "comparator": "<"}
    assert "referenceRange" not in egfr  # "[ ]" says nothing
    assert egfr["note"] == [{"text": "Objective chairlift pard mug mouse sweatshirt wildlife "
                                     "contract mode"}]
    encounter = one(bundle, "Encounter")
    assert encounter["identifier"][0]["value"] == "4637913778641671097"
    assert all(o["encounter"] == observations[0]["encounter"] for o in observations)


def test_multiline_text_report_lines_use_the_report_code() -> None:
    bundle = bundle_of("lfh_ORU-multiline-short.hl7")
    report = one(bundle, "DiagnosticReport")
    assert report["code"]["coding"][0]["code"] == "1487"
    lines = resources(bundle, "Observation")
    assert [o.get("valueString") for o in lines] == [
        None, "[PII] Emergency Department", "ED Encounter Arrival Date: [ADDRESS] [PERSONALNAME]:"]
    assert all(o["code"]["coding"][0]["code"] == "1487" for o in lines)


def test_lfh_unix_sample_with_doubled_escape_in_msh2() -> None:
    bundle = bundle_of("lfh_sample_unix.hl7")
    patient = one(bundle, "Patient")
    assert patient["identifier"][0]["value"] == "PID1234"
    assert patient["name"] == [{"family": "DOE", "given": ["JOHN", "A"]}]
    assert patient["birthDate"] == "1980-02-02"
    encounter = one(bundle, "Encounter")
    # PV1-2 "ff" is not in table 0004
    assert encounter["class"]["code"] == "UNK"
    assert encounter["period"] == {"start": "2014-09-12T22:00:00+00:00"}


def test_oru_r01_with_many_segments() -> None:
    bundle = bundle_of("fhirconverter_ORU-R01-01.hl7")
    patient = one(bundle, "Patient")
    assert patient["identifier"][0] == {
        "system": "urn:oid:2.16.840.1.114222.4.3.3.5.1.2", "value": "14",
        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                             "code": "PI"}]}}
    assert patient["name"] == [{"use": "official", "family": "Finn", "given": ["Huckleberry"]}]
    report = one(bundle, "DiagnosticReport")
    assert report["effectiveDateTime"] == "2002-02-15T07:30:00+02:15"
    salmonella = resources(bundle, "Observation")[0]
    assert salmonella["valueCodeableConcept"]["coding"][0]["code"] == "27268008"
    assert salmonella["note"] == [{"text": "Submission of serum"},
                                  {"text": "No Antibodies Detected"}]
    assert one(bundle, "Encounter")["status"] == "finished"  # PV1-45 discharge time given
