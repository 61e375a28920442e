"""_sort on a quantity parameter compares canonical UCUM values where the unit converts
(search.units), the stored value otherwise; on a bare SQLite index."""

from __future__ import annotations

from pathlib import Path

from tests.search_index_db import SearchDB

UCUM = "http://unitsofmeasure.org"


def test_quantities_sort_by_their_canonical_value(tmp_path: Path) -> None:
    db = SearchDB(tmp_path / "index.db")
    values = {"g2": (2, "g/L"), "mg150": (150, "mg/dL"), "g1": (1, "g/L"), "none": None,
              "tab": (1.2, "tablets")}  # fmt: skip
    for rid, value in values.items():
        resource = {"resourceType": "Observation", "id": rid, "status": "final",
                    "code": {"text": "glucose"}}  # fmt: skip
        if value is not None:
            number, unit = value
            quantity = {"value": number, "unit": unit}
            if unit != "tablets":
                quantity |= {"system": UCUM, "code": unit}
            resource["valueQuantity"] = quantity
        db.add_json(resource)
    # 1 g/L < 1.2 tablets (no unit to convert: as stored) < 150 mg/dL = 1.5 g/L < 2 g/L
    assert db.search("Observation", [("_sort", "value-quantity")]) == [
        "g1", "tab", "mg150", "g2", "none"
    ]
    assert db.search("Observation", [("_sort", "-value-quantity")]) == [
        "g2", "mg150", "tab", "g1", "none"
    ]
