"""One definition per clinical rule (issue 17): the SOFA/hourly/Sepsis-3 constants live once.

Every vocabulary and constant of the glue between charted data and the ladders is written once, in
``criteria/sofa_definitions.toml`` (typed by :mod:`immunoguide.criteria.definitions`), or in ``concepts.toml`` for
plausibility. The scan below reads the code of ``rules/`` and ``cohort/`` (comments and docstrings left out; SQL
strings included) for the known constants written as bare literals and fails naming ``file:line``.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import get_args

import pytest

from immunoguide.criteria.definitions import SOFA_DEFINITIONS, load_sofa_definitions_text
from immunoguide.errors import CriteriaError
from immunoguide.rules.sofa_inputs import Ventilation
from immunoguide.rules.timeline import CATECHOLAMINES, Drug

SRC = Path(__file__).resolve().parents[1] / "src" / "immunoguide"
SCANNED = (SRC / "rules", SRC / "cohort")

_CAT = r"(?:dopamine|dobutamine|epinephrine|norepinephrine)"
_OTHER = r"(?:vasopressin|phenylephrine|milrinone)"
_VENT = r"(?:invasive|tracheostomy_ventilated|noninvasive|cpap|hfnc|oxygen)"
_Q = r"[\"']"

#: What is looked for: name → (pattern, where the value lives instead).
PATTERNS: dict[str, tuple[re.Pattern[str], str]] = {
    "room-air FiO2 0.21": (re.compile(r"(?<![\w.])0\.21(?!\d)"), "SOFA_DEFINITIONS.room_air_fio2"),
    "urine plausibility 0..5000": (
        re.compile(r"BETWEEN\s+0(?:\.0)?\s+AND\s+5000", re.I),
        "concepts.toml urine_output_ml (_plausible('urine_output_ml'))",
    ),
    "catecholamine list": (re.compile(rf"{_Q}{_CAT}{_Q}\s*,\s*{_Q}{_CAT}{_Q}"), "SOFA_DEFINITIONS.catecholamines"),
    "other vasoactive list": (
        re.compile(rf"{_Q}{_OTHER}{_Q}\s*,\s*{_Q}{_OTHER}{_Q}"),
        "SOFA_DEFINITIONS.other_vasoactives",
    ),
    "ventilation kind list": (
        re.compile(rf"{_Q}{_VENT}{_Q}\s*,\s*{_Q}{_VENT}{_Q}"),
        "SOFA_DEFINITIONS.ventilation_kinds / invasive_ventilation / respiratory_support / advanced_ventilation",
    ),
    "urine observation window 22/30/12 h": (
        re.compile(
            r"(?:observed\w*|\bh)\s*(?:>=|<=|<|>)\s*(?:22|30|12)\b|\b(?:22|30|12)\s*(?:<=|<)\s*(?:h|observed\w*)\b"
            r"|\bn\s*>=\s*12\b"
        ),
        "SOFA_DEFINITIONS.urine_mimic_code_h / urine_ricu_min_h",
    ),  # fmt: skip
    "urine scaled to 24 h": (re.compile(r"\*\s*24(?:\.0)?\s*/"), "SOFA_DEFINITIONS.urine_window_h"),
    "vasopressor 60 min / merge gap 5 min": (
        re.compile(r"\bminutes\s*=\s*(?:5|60)\b|\bdur\w*\s*<\s*60\b"),
        "SOFA_DEFINITIONS.vasopressor_min_episode_min / vasopressor_merge_gap_min",
    ),
    "FiO2 look-back 4 h, ricu windows 6 h / 2 rows": (
        re.compile(r"\b(?:interval|timedelta)\(\s*hours\s*=\s*(?:4|6|2)\s*\)"),
        "SOFA_DEFINITIONS.fio2_lookback_h / ricu_gcs_valid_h / ricu_pf_match_rows",
    ),
    "normal GCS 15": (
        re.compile(r"\breturn\s+15\b|literal\(\s*15(?:\.0)?\b|coalesce\([^()]*,\s*15(?:\.0)?\s*\)|,\s*15\.0\s*,"),
        "SOFA_DEFINITIONS.normal_gcs",
    ),
    "normal GCS components 4/5/6": (
        re.compile(rf"{_Q}gcs_eye{_Q}\s*:\s*4\b|{_Q}gcs_verbal{_Q}\s*:\s*5\b|{_Q}gcs_motor{_Q}\s*:\s*6\b"),
        "SOFA_DEFINITIONS.normal_gcs_components",
    ),
    "respiration cap 2 without support": (
        re.compile(r"literal\(\s*2\s*,\s*[\"']int64[\"']\s*\)|\bresp\s*=\s*2\b"),
        "SOFA_DEFINITIONS.pf_without_support_cap_points",
    ),
    "rolling window 24/25 rows": (
        re.compile(r"\b25 if\b|\belse 24\b|\(\s*2[45]\s*,\s*\)"),
        "SOFA_DEFINITIONS.window_rows / ricu_window_rows",
    ),
}

#: Lines allowed to hold a listed literal, and why (file relative to src/immunoguide → substring of the line).
ALLOWED: dict[tuple[str, str], str] = {
    ("rules/sofa_inputs.py", "Ventilation = Literal["): "static type of SofaInputs.ventilation; tied to the data below",
    ("rules/timeline.py", "Drug = Literal["): "static type of Infusion.drug; tied to the data below",
    ("cohort/sources/ricu_profile.py", "_CATECHOLAMINES = ("): "ricu's concept order: infusion rows are built in it",
}


def _code_lines(path: Path) -> list[tuple[int, str]]:
    """The lines of ``path`` with comments and docstrings blanked (string literals such as SQL kept)."""
    text = path.read_text("utf-8")
    lines = text.split("\n")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                for i in range(first.lineno - 1, (first.end_lineno or first.lineno)):
                    lines[i] = ""
    for tok in tokenize.generate_tokens(io.StringIO(text).readline):
        if tok.type == tokenize.COMMENT:
            row, col = tok.start
            lines[row - 1] = lines[row - 1][:col]
    return list(enumerate(lines, start=1))


def find_bare_constants(roots: tuple[Path, ...] = SCANNED) -> list[str]:
    """``file:line: what (use instead)`` for every listed constant written as a bare literal under ``roots``."""
    hits = []
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            rel = path.relative_to(SRC).as_posix()
            for lineno, line in _code_lines(path):
                if any(f == rel and s in line for (f, s) in ALLOWED):
                    continue
                for what, (pat, instead) in PATTERNS.items():
                    if pat.search(line):
                        hits.append(
                            f"src/immunoguide/{rel}:{lineno}: {what} written as a literal (use {instead}): {line.strip()}"
                        )
    return hits


def test_no_sofa_constant_is_written_as_a_bare_literal_in_rules_or_cohort() -> None:
    hits = find_bare_constants()
    assert hits == [], "\n".join(hits)


def test_the_scan_finds_a_reintroduced_literal_and_names_file_and_line(tmp_path: Path) -> None:
    """The scan is not vacuous: each pattern catches the literal it is for, reported as file:line."""
    root = tmp_path / "cohort"
    root.mkdir()
    samples = [
        "f = ibis.coalesce(f, 0.21)",
        'q = "SELECT * FROM uo WHERE value BETWEEN 0 AND 5000"',
        'DRUGS = ("dopamine", "dobutamine", "epinephrine", "norepinephrine")',
        'OTHER = ("vasopressin", "phenylephrine")',
        'kinds = ("invasive", "tracheostomy_ventilated")',
        "ok = (observed >= 22) & (observed <= 30)",
        "daily = ml * 24.0 / observed",
        "gap = ibis.interval(minutes=5)",
        "back = ibis.interval(hours=4)",
        "sed = ibis.literal(15.0)",
        'normal = {"gcs_eye": 4.0}',
        'capped = ibis.literal(2, "int64")',
        'rows = 25 if res["rolling_window"] == "25_rows" else 24',
    ]
    (root / "x.py").write_text(
        '"""0.21 in a docstring is prose."""\n# 0.21 in a comment too\n' + "\n".join(samples) + "\n"
    )
    global SRC
    saved, SRC = SRC, tmp_path
    try:
        hits = find_bare_constants((root,))
    finally:
        SRC = saved
    assert len(hits) == len(samples) == len(PATTERNS)
    assert [h.split(": ", 1)[0] for h in hits] == [
        f"src/immunoguide/cohort/x.py:{i}" for i in range(3, 3 + len(samples))
    ]


def test_the_static_types_hold_exactly_the_vocabularies_of_the_data() -> None:
    assert get_args(Ventilation) == SOFA_DEFINITIONS.ventilation_kinds
    assert get_args(Drug) == SOFA_DEFINITIONS.vasoactives
    assert CATECHOLAMINES == SOFA_DEFINITIONS.catecholamines


def test_every_definition_is_cited_and_the_loader_refuses_a_broken_file() -> None:
    assert all(d.citation for d in SOFA_DEFINITIONS.entries.values())
    text = (SRC / "criteria" / "sofa_definitions.toml").read_text("utf-8")
    for broken, why in [
        (text.replace("value = 0.21", "value = 0.5"), "room air out of range"),
        (text.replace('values = ["invasive", "tracheostomy_ventilated", "noninvasive", "cpap", "hfnc"]',
                      'values = ["invasive", "helmet"]'), "a kind that is not a ventilation kind"),
        (re.sub(r'citation = "mimic-code measurement/bg.sql[^\n]*', 'citation = " "', text), "empty citation"),
        (text.replace("[constants.urine_ricu_min_h]", "[constants.urine_ricu_min]"), "unknown / missing constant"),
    ]:  # fmt: skip
        assert broken != text, why
        with pytest.raises(CriteriaError):
            load_sofa_definitions_text(broken, where=why)


def _imported_modules(path: Path) -> set[str]:
    mods: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            mods.add(node.module)
        elif isinstance(node, ast.Import):
            mods |= {a.name for a in node.names}
    return mods


def test_sofa_and_sofa2_do_not_import_each_other_the_shared_inputs_sit_below_both() -> None:
    """rules.sofa imports rules.sofa2 (score_sofa dispatches to it); rules.sofa2 and rules.sofa_inputs never import
    rules.sofa, so there is no cycle; the old names stay importable from rules.sofa."""
    rules = SRC / "rules"
    assert "immunoguide.rules.sofa" not in _imported_modules(rules / "sofa2.py")
    assert not {"immunoguide.rules.sofa", "immunoguide.rules.sofa2"} & _imported_modules(rules / "sofa_inputs.py")
    import immunoguide.rules.sofa as sofa
    import immunoguide.rules.sofa_inputs as inputs

    for name in ("SofaInputs", "SofaResult", "COMPONENTS", "Ventilation", "finalise", "fio2_for_ratio",
                 "mean_arterial_pressure", "urine_ml_per_day", "effective_gcs", "drug_rate_counts"):  # fmt: skip
        assert getattr(sofa, name) is getattr(inputs, name)
