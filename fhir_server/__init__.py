"""fhir-fusion: a FHIR R4 server that turns legacy clinical feeds into one record per patient."""

__version__ = "0.1.0"
FHIR_VERSION = "4.0.1"
