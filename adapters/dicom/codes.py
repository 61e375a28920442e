"""Code systems and the few DICOM -> SNOMED CT tables the translation uses."""

from __future__ import annotations

DCM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID = "urn:dicom:uid"
RFC3986 = "urn:ietf:rfc:3986"
SNOMED = "http://snomed.info/sct"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
ENDPOINT_CONNECTION = "http://terminology.hl7.org/CodeSystem/endpoint-connection-type"
BODY_PART_TEXT = "urn:fhir-fusion:dicom:body-part-examined"
NUMBER_OF_FRAMES = "urn:fhir-fusion:extension:dicom-number-of-frames"
# Where the instance's file is: "sha256:<hex>" in the blob store (for WADO-RS)
FILE_SHA256 = "urn:fhir-fusion:extension:dicom-file-sha256"
ENDPOINT_SYSTEM = "urn:fhir-fusion:endpoint"
# Patients sent without Patient ID: one per study, so they are never merged by accident.
STUDY_PATIENT_SYSTEM = "urn:fhir-fusion:dicom:patient-of-study"
UNKNOWN_ISSUER_SYSTEM = "urn:fhir-fusion:dicom:authority:unknown"

# Coding Scheme Designator (0008,0102) -> FHIR system (PS3.16 Section 8).
CODING_SCHEMES = {
    "DCM": DCM,
    "SCT": SNOMED,
    "SRT": SNOMED,
    "LN": "http://loinc.org",
    "UCUM": "http://unitsofmeasure.org",
    "RADLEX": "http://radlex.org",
    "RADLX": "http://radlex.org",
    "ICD10": "http://hl7.org/fhir/sid/icd-10",
    "I10": "http://hl7.org/fhir/sid/icd-10",
    "C4": "http://www.ama-assn.org/go/cpt",
    "CPT4": "http://www.ama-assn.org/go/cpt",
}
LOCAL_SCHEME_PREFIX = "urn:fhir-fusion:dicom:coding-scheme:"

# Modality (0008,0060) defined terms of PS3.3 C.7.3.1.1.1 are DCM codes (CID 29/33);
# the display is the DCM code meaning of the common ones.
MODALITY_DISPLAY = {
    "CR": "Computed Radiography",
    "CT": "Computed Tomography",
    "MR": "Magnetic Resonance",
    "US": "Ultrasound",
    "NM": "Nuclear Medicine",
    "PT": "Positron emission tomography",
    "DX": "Digital Radiography",
    "MG": "Mammography",
    "XA": "X-Ray Angiography",
    "RF": "Radio Fluoroscopy",
    "OT": "Other",
    "SR": "SR Document",
    "SEG": "Segmentation",
    "ECG": "Electrocardiography",
    "RTPLAN": "Radiotherapy Plan",
    "RTSTRUCT": "Radiotherapy Structure Set",
    "RTIMAGE": "RT Image",
    "RTDOSE": "Radiotherapy Dose",
    "KO": "Key Object Selection",
    "PR": "Presentation State",
    "DOC": "Document",
    "SM": "Slide Microscopy",
    "XC": "External-camera Photography",
    "ES": "Endoscopy",
    "OP": "Ophthalmic photography",
    "OPT": "Ophthalmic Tomography",
    "IO": "Intra-oral Radiography",
    "PX": "Panoramic X-Ray",
}

# Body Part Examined (0018,0015) -> SNOMED CT, from PS3.16 Annex L (the terms seen in
# practice); any other value is kept as its text under BODY_PART_TEXT.
BODY_PART = {
    "ABDOMEN": ("818981001", "Abdomen"),
    "ANKLE": ("70258002", "Ankle joint"),
    "BRAIN": ("12738006", "Brain"),
    "BREAST": ("76752008", "Breast"),
    "CHEST": ("43799004", "Chest"),
    "CSPINE": ("122494005", "Cervical spine"),
    "HEAD": ("69536005", "Head"),
    "HEART": ("80891009", "Heart"),
    "KNEE": ("72696002", "Knee"),
    "LSPINE": ("122496007", "Lumbar spine"),
    "NECK": ("45048000", "Neck"),
    "PELVIS": ("12921003", "Pelvis"),
    "SKULL": ("89546000", "Skull"),
    "TSPINE": ("122495006", "Thoracic spine"),
    "WHOLEBODY": ("38266002", "Entire body"),
}

# Laterality (0020,0060) / Image Laterality (0020,0062) -> SNOMED CT (CID 244).
LATERALITY = {
    "R": ("24028007", "Right"),
    "L": ("7771000", "Left"),
    "B": ("51440002", "Right and left"),
    "U": ("66459002", "Unilateral"),
}
