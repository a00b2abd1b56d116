"""Boundary tests generated from the SOFA-1 criteria file: below / at / above every band edge, and missing.

The expected points come from the band layout alone (the band that ends at the edge scores below it, the band
that starts at it scores above it, the edge itself follows the written inclusivity or, for contested edges, the
policy), and the scored value goes through the whole public path: record → SofaInputs → score_sofa → component.
A ladder wired to the wrong input (AmsterdamUMCdb#36 scored liver with the platelet value) fails here.
"""

from __future__ import annotations

from typing import Any

import pytest

from immunoguide.criteria import Ladder, load_criteria
from immunoguide.rules.sofa import SofaInputs, score_sofa

CRIT = load_criteria("sofa1")


def record_for(ladder: Ladder, x: float) -> dict[str, Any]:
    """An input record that puts ``x`` into ``ladder``'s concept and nothing else that could score."""
    c = ladder.concept
    if c == "pf_ratio_mmhg":
        return {"pao2_mmhg": x, "fio2_fraction": 1.0, "ventilation": "invasive"}
    if c.endswith("_ug_kg_min"):
        drug = c.removesuffix("_ug_kg_min")
        return {c: x, f"{drug}_duration_min": 120}
    if c == "gcs":
        return {"gcs": int(x)}
    return {c: x}


def step(ladder: Ladder) -> float:
    return 1.0 if ladder.concept == "gcs" else 0.01


def cases() -> list[tuple[str, str, float, int, dict[str, str]]]:
    out = []
    for ladder in CRIT.ladders.values():
        d = step(ladder)
        for edge in ladder.edges():
            below = next(b for b in ladder.bands if b.interval.hi == edge)
            above = [b for b in ladder.bands if b.interval.lo == edge and not (b.interval.hi == edge)]
            if below.interval.lo < edge - d or below.interval.lo == -float("inf"):
                if ladder.domain.contains(edge - d):
                    out.append((ladder.name, "below", edge - d, below.points, {}))
            if above and ladder.domain.contains(edge + d):
                out.append((ladder.name, "above", edge + d, above[0].points, {}))
            contested = [e for e in ladder.contested_edges if e.value == edge]
            if contested:
                edge_def = contested[0]
                for option, side in edge_def.membership.items():
                    pts = below.points if side == "lower" else above[0].points
                    out.append((ladder.name, f"at[{edge_def.policy}={option}]", edge, pts, {edge_def.policy: option}))
            else:
                at = next(b for b in ladder.bands if b.interval.contains(edge))
                out.append((ladder.name, "at", edge, at.points, {}))
    return out


CASES = cases()


@pytest.mark.parametrize(
    ("ladder_name", "where", "x", "points", "policies"),
    CASES,
    ids=[f"{c[0]}-{c[1]}-{c[2]:g}" for c in CASES],
)
def test_value_at_each_band_edge_scores_the_band_the_table_assigns(
    ladder_name: str, where: str, x: float, points: int, policies: dict[str, str]
) -> None:
    """A value just below, exactly at and just above every threshold scores the band the criteria file assigns."""
    ladder = CRIT.ladders[ladder_name]
    result = score_sofa(SofaInputs.from_record(record_for(ladder, x)), policies=policies)
    assert result.components[ladder.component] == points
    assert ladder.component not in result.missing_components


@pytest.mark.parametrize("component", CRIT.components)
def test_component_without_any_input_is_missing_and_imputed_as_normal(component: str) -> None:
    """No input for a component: it is listed as missing, imputed 0 under the default policy, None without."""
    result = score_sofa(SofaInputs())
    assert component in result.missing_components and result.components[component] == 0
    strict = score_sofa(SofaInputs(), policies={"missing_component": "no_imputation"})
    assert strict.components[component] is None and strict.total is None


def test_every_ladder_edge_is_covered_by_a_generated_case() -> None:
    """The generator covers every edge of every ladder (a new threshold cannot ship untested)."""
    covered = {(c[0], c[2]) for c in CASES if c[1].startswith("at")}
    for ladder in CRIT.ladders.values():
        for edge in ladder.edges():
            assert (ladder.name, edge) in covered


def test_platelets_exactly_100_scores_one_point() -> None:
    """Platelets 100 ×10³/µL is in '<150' (1 point), not '<100' (2 points)."""
    assert score_sofa(SofaInputs(platelets_10e3_per_ul=100)).components["coagulation"] == 1


def test_bilirubin_exactly_12_scores_four_by_default_and_three_under_the_literal_policy() -> None:
    """Bilirubin 12.0 mg/dL: 4 points (mimic-code/ricu) by default, 3 under bilirubin_exactly_12=three_points."""
    assert score_sofa(SofaInputs(bilirubin_mg_per_dl=12.0)).components["liver"] == 4
    r = score_sofa(SofaInputs(bilirubin_mg_per_dl=12.0), policies={"bilirubin_exactly_12": "three_points"})
    assert r.components["liver"] == 3 and r.policies["bilirubin_exactly_12"] == "three_points"


def test_dopamine_exactly_5_scores_two_by_default() -> None:
    """Dopamine 5 µg/kg/min scores 2 ('<5' band, as mimic-code and ricu), 3 under the alternative policy."""
    base = {"dopamine_ug_kg_min": 5, "dopamine_duration_min": 120}
    assert score_sofa(SofaInputs(**base)).components["cardiovascular"] == 2
    r = score_sofa(SofaInputs(**base), policies={"dopamine_exactly_5": "three_points"})
    assert r.components["cardiovascular"] == 3


def test_creatinine_exactly_5_scores_four_by_default() -> None:
    """Creatinine 5.0 mg/dL scores 4 by default (mimic-code/ricu '>= 5'), 3 under the literal reading."""
    assert score_sofa(SofaInputs(creatinine_mg_per_dl=5.0)).components["renal"] == 4
    r = score_sofa(SofaInputs(creatinine_mg_per_dl=5.0), policies={"creatinine_exactly_5": "three_points"})
    assert r.components["renal"] == 3
