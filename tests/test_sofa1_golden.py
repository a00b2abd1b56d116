"""Golden single-window SOFA-1 cases (tests/golden/sofa1_single_window.toml), each citing its source."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from immunoguide.rules.sofa import COMPONENTS, SofaInputs, score_sofa

CASES = tomllib.loads((Path(__file__).parent / "golden" / "sofa1_single_window.toml").read_text("utf-8"))["case"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_golden_single_window_case_scores_as_the_cited_table(case: dict) -> None:
    """Each golden case scores exactly the components and total recomputed from Singer 2016 Table 1."""
    result = score_sofa(SofaInputs.from_record(case["inputs"]))
    expected = case["expected"]
    for comp in COMPONENTS:
        if comp in expected:
            assert result.components[comp] == expected[comp], (comp, case["source"])
        else:
            # Components without an expected value have no inputs in the case: missing, imputed as normal.
            assert comp in result.imputed_components
            assert result.components[comp] == 0
    assert result.total == expected["total"]
