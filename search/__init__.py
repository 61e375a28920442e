"""FHIR search: index values extracted from resources and parsed search queries.

- `search.values`: normalisation shared by indexing and querying (strings, dates, references).
- `search.paths`: FHIRPath expressions of search parameters compiled into fast getters.
- `search.extract`: the index rows of one resource.
- `search.query`: parsing of search URLs into a `SearchQuery`.
"""
