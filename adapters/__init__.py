"""Adapters turn outside feeds (HL7v2 now; DICOM and CSV later) into FHIR transaction Bundles.

`adapters.pipeline.Pipeline` is the one write path every feed goes through.
"""
