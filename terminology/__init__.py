"""Terminology: code systems, value sets, concept maps and units (UCUM), served over
FHIR and used by the adapters to standardise incoming codes and quantities."""
