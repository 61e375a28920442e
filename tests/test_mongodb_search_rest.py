"""The REST search tests of the SQLite store, run again on the MongoDB store (mongomock
behind tests/mongo_async.py; a real server when FHIR_FUSION_TEST_MONGODB is set).

The test functions are imported from their modules unchanged: pytest collects them
here, where the `store` fixture is the MongoDB store, so `client` and `graph`
(tests/conftest.py) speak to the app on MongoDB. Tests that look inside SQLite
(query counts, EXPLAIN plans) are not imported, nor the one that expects SQLite's
compile limit (test_deeply_nested_chain_and_has_is_400): MongoDB runs that search,
see test_deep_chain_and_has_run_on_mongodb."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from storage_backends import REAL_MONGODB, close_backend, open_backend

from test_search_chain import (  # noqa: F401 - collected here, on MongoDB
    test_bad_chains_are_400_naming_the_parameter,
    test_chain_result_sets,
    test_chain_skips_deleted_targets,
    test_chain_through_post_search,
    test_links_keep_the_chain,
    test_system_search_through_post,
    test_system_search_type_is_kept_in_links,
    test_system_search_unknown_type_is_400,
    test_system_search_with_type,
)
from test_search_contained import meds  # noqa: F401 - its fixture
from test_search_contained import (  # noqa: F401
    test_a_chain_is_evaluated_inside_contained_resources,
    test_a_contained_match_is_the_contained_resource_itself,
    test_contained_modes,
    test_contained_rows_follow_their_container,
    test_include_from_contained_resources,
    test_paging_through_contained_resources_neither_skips_nor_repeats,
    test_paging_through_containers_neither_skips_nor_repeats,
    test_sorting_with_contained_resources,
)
from test_search_include import (  # noqa: F401
    test_bad_result_parameters_are_400,
    test_deleted_resources_are_not_included,
    test_include_is_kept_in_the_links,
    test_include_result_sets,
    test_include_through_post_search,
    test_included_entries_follow_the_matches,
)
from test_rest_compartment import (  # noqa: F401
    test_bad_compartment_requests,
    test_compartment_does_not_leak_other_patients,
    test_compartment_links_name_the_compartment,
    test_compartment_result_sets,
    test_compartment_search_through_post,
    test_compartment_with_include,
)
from test_rest_compartments_r4 import linked  # noqa: F401 - its fixture
from test_rest_compartments_r4 import (  # noqa: F401
    test_bad_compartment_requests as test_bad_r4_compartment_requests,
    test_compartment_result_sets as test_r4_compartment_result_sets,
    test_compartment_search_through_post as test_r4_compartment_search_through_post,
)
from test_rest_search import patients  # noqa: F401 - its fixture
from test_rest_search import (  # noqa: F401
    test_bad_search_value_is_400,
    test_deleted_resources_are_not_found_by_search,
    test_next_link_keeps_the_search_parameters,
    test_paging_follows_next_links_to_the_end,
    test_post_search_takes_a_form_body,
    test_search_by_identifier_token,
    test_search_returns_a_searchset_with_total_and_match_entries,
    test_system_search_spans_types,
    test_unknown_parameter_is_ignored_unless_strict,
)
from test_rest_search_complexity import (  # noqa: F401
    test_a_shallower_chain_and_has_still_runs,
)
from test_rest_search_limits import (  # noqa: F401
    test_oversized_or_out_of_range_is_400,
    test_too_many_includes_is_400,
    test_too_many_parameters_is_400,
    test_values_within_the_limits_run_even_through_chains,
)
from test_rest_shaping import stored  # noqa: F401 - its fixture
from test_rest_shaping import (  # noqa: F401
    test_elements_kept_in_links_and_post,
    test_shaping_applies_to_included_resources,
    test_subset_keeps_exactly_these_elements,
    test_summary_count_gives_the_total_only,
    test_summary_false_is_the_whole_resource,
)
from test_search_paging import (  # noqa: F401
    test_a_tampered_cursor_over_http_is_a_400,
    test_next_links_over_http_neither_skip_nor_repeat,
    test_store_search_page_carries_next_cursor,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Any]:
    """The MongoDB store (mongomock, or the real server of FHIR_FUSION_TEST_MONGODB)."""
    kind = "mongodb" if REAL_MONGODB else "mongomock"
    opened, token = await open_backend(kind, tmp_path)
    try:
        yield opened
    finally:
        await close_backend(opened, token)


async def test_deep_chain_and_has_run_on_mongodb(client: httpx.AsyncClient) -> None:
    """Chains and _has nested four deep over every target type go beyond SQLite's
    parser stack (a 400 there); on MongoDB each hop is one bounded id query, so the
    search runs and answers."""
    name = "subject._has:Observation:subject:subject._has:Observation:subject:code"
    response = await client.get("Observation", params={name: "x"})
    assert response.status_code == 200, response.text
    assert response.json()["total"] == 0
