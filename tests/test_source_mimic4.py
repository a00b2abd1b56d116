"""The MIMIC-IV adapter on generated MIMIC-IV-shaped data (immunoguide synth mimic4): mapping, units, and every
injected bad row in a mapped item reported per stay; the engine equals the single-patient rules on it."""

from __future__ import annotations

from pathlib import Path

import duckdb
import ibis
import pyarrow.parquet as pq
import pytest

from immunoguide.cohort.engine import TimelineTables, hourly_sofa_expr
from immunoguide.cohort.schema import SCHEMAS
from immunoguide.cohort.sources.mimic3 import load_items
from immunoguide.cohort.sources.mimic4 import convert_mimic4
from immunoguide.cohort.timelines import iter_timelines
from immunoguide.errors import InputError
from immunoguide.rules.hourly import hourly_sofa
from immunoguide.rules.sofa import COMPONENTS
from immunoguide.synth import generate_mimic4


@pytest.fixture(scope="module")
def synth_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    raw = tmp_path_factory.mktemp("mimic4_raw")
    generate_mimic4(raw, stays=250, seed=7)
    tl = tmp_path_factory.mktemp("mimic4_timeline")
    convert_mimic4(raw, tl)
    return raw, tl


def q(sql: str) -> list[tuple]:
    return duckdb.sql(sql).fetchall()


def test_mimic4_tables_have_the_timeline_schema(synth_dirs: tuple[Path, Path]) -> None:
    """Every output table has exactly the columns and types of cohort/schema.py."""
    _, tl = synth_dirs
    for table, schema in SCHEMAS.items():
        assert pq.read_schema(tl / f"{table}.parquet").equals(schema, check_metadata=False), table


def test_hla_dr_keeps_its_quantibrite_method_and_ferritin_its_censoring(synth_dirs: tuple[Path, Path]) -> None:
    """mHLA-DR (synthetic item 990001) carries method quantibrite_abc; censored ferritin keeps its text, no value."""
    _, tl = synth_dirs
    methods = {m for (m,) in q(f"select distinct method from '{tl}/observations.parquet' where concept = 'hla_dr_per_monocyte'")}
    assert methods == {"quantibrite_abc"}
    cens = q(f"select count(*) from '{tl}/observations.parquet' where concept = 'ferritin_ng_per_ml' and value is null and value_text is not null")
    assert cens[0][0] > 0


def test_unknown_item_ids_are_counted_exactly(synth_dirs: tuple[Path, Path]) -> None:
    """Every injected unknown item id (not in d_items / d_labitems) is reported, none invented."""
    raw, tl = synth_dirs
    truth = q(f"select count(*) from '{raw}/_truth/bad_rows/*.parquet' where kind = 'unknown_itemid'")[0][0]
    found = q(f"select coalesce(sum(n), 0) from '{tl}/data_quality.parquet' where issue = 'unknown_itemid'")[0][0]
    assert truth > 0 and found == truth


def test_every_injected_bad_row_in_a_mapped_item_is_reported_for_its_stay(synth_dirs: tuple[Path, Path]) -> None:
    """Implausible values, text in numeric fields, unit problems and pre-admission outputs in the items the adapter
    maps (MAP, labs, urine, vasopressors) are each counted in data_quality for the right stay."""
    raw, tl = synth_dirs
    it = load_items("mimic4_items.toml")
    mapped = set(it["chart"]["map_mmhg"] + it["chart"]["fio2"]) | {i for v in it["lab"].values() if isinstance(v, list) for i in v}
    mapped |= set(it["urine"]["items"]) | {i for v in it["vasopressors"].values() for i in v}
    ids = ", ".join(str(i) for i in sorted(x for x in mapped if isinstance(x, int)))
    rows = q(
        f"""with t as (select "table" as src, cast(itemid as varchar) as item, stay_id, count(*) as n_truth
                       from '{raw}/_truth/bad_rows/*.parquet' where kind <> 'unknown_itemid' and itemid in ({ids}) group by all),
                 d as (select source as src, item, stay_id, sum(n) as n_dq from '{tl}/data_quality.parquet' group by all)
            select t.src, t.item, t.stay_id, t.n_truth, coalesce(d.n_dq, 0) from t left join d using (src, item, stay_id)"""
    )
    assert rows
    missed = [r for r in rows if r[4] < r[3]]
    assert missed == []


def test_engine_equals_single_patient_rules_on_generated_mimic4(synth_dirs: tuple[Path, Path]) -> None:
    """The set-based hourly SOFA equals hourly_sofa on every generated stay (a second differential test)."""
    _, tl = synth_dirs
    df = hourly_sofa_expr(TimelineTables.from_parquet(ibis.duckdb.connect(), str(tl))).execute()
    ref = {(t.stay_id, r.hour_end): r for t in iter_timelines(tl) for r in hourly_sofa(t)}
    assert len(df) == len(ref)
    bad = [
        row for row in df.itertuples(index=False)
        if tuple(int(getattr(row, c)) for c in (*COMPONENTS, "total"))
        != tuple(getattr(ref[(row.stay_id, row.hour_end.to_pydatetime())], c) for c in (*COMPONENTS, "total"))
    ]
    assert bad == []


def test_missing_mimic4_table_names_the_module_and_table(tmp_path: Path) -> None:
    """A folder without hosp/admissions is rejected with the table it lacks."""
    with pytest.raises(InputError, match="hosp/admissions"):
        convert_mimic4(tmp_path, tmp_path / "out")
