"""The CSV feed: flat-file exports to FHIR resources by a mapping file.

`ingest.ingest_csv` loads one file through the pipeline (good rows in chunks, each bad
row kept alone with its line number); `mapping.load` reads a built-in or a file
mapping; `translate.TRANSLATOR` is the pipeline's translator for the "csv" feed.
"""
