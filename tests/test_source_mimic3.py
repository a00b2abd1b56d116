"""The MIMIC-III adapter maps the open demo into the timeline schema and reports every row it cannot use."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from immunoguide.cohort.schema import SCHEMAS
from immunoguide.errors import InputError


def q(sql: str) -> list[tuple]:
    return duckdb.sql(sql).fetchall()


def test_every_table_has_exactly_the_timeline_schema(mimic3_timeline: Path) -> None:
    """Each written Parquet file has the columns and types of cohort/schema.py."""
    for table, schema in SCHEMAS.items():
        assert pq.read_schema(mimic3_timeline / f"{table}.parquet").equals(schema, check_metadata=False), table


def test_all_136_icu_stays_of_the_demo_are_present(mimic3_timeline: Path) -> None:
    """The demo has 100 patients and 136 ICU stays; every stay is in the stays table once."""
    (n, distinct), = q(f"select count(*), count(distinct stay_id) from '{mimic3_timeline}/stays.parquet'")
    assert n == distinct == 136


def test_censored_ferritin_keeps_its_text_and_has_no_number(mimic3_timeline: Path, mimic3_demo_dir: Path) -> None:
    """'GREATER THAN 2000' ferritin rows inside ICU windows are kept as text with a NULL value, never as 2000."""
    rows = q(f"select value, value_text from '{mimic3_timeline}/observations.parquet' where concept = 'ferritin_ng_per_ml' and value_text like 'GREATER%'")
    assert rows and all(v is None for v, _ in rows)
    numeric = q(f"select max(value) from '{mimic3_timeline}/observations.parquet' where concept = 'ferritin_ng_per_ml'")
    assert numeric[0][0] <= 1986  # SOURCE.md: valuenum 15–1986 ng/mL


def test_pao2_comes_only_from_arterial_gases(mimic3_timeline: Path, mimic3_demo_dir: Path) -> None:
    """Every PaO2 observation has an arterial (ART) specimen at the same time in labevents."""
    n_pao2, = q(f"select count(*) from '{mimic3_timeline}/observations.parquet' where concept = 'pao2_mmhg'")[0]
    art = q(
        f"""select count(*) from read_csv('{mimic3_demo_dir}/labevents.csv.gz', header=true, all_varchar=true) p
            join read_csv('{mimic3_demo_dir}/labevents.csv.gz', header=true, all_varchar=true) s
              on s.subject_id = p.subject_id and s.charttime = p.charttime and s.itemid = '50800' and s.value = 'ART'
            where p.itemid = '50821' and p.valuenum is not null"""
    )[0][0]
    assert 0 < n_pao2 <= art


def test_gu_irrigant_is_netted_against_urine_and_never_negative(mimic3_timeline: Path) -> None:
    """Item 227488 (GU irrigant in) is subtracted at its charting time (mimic-code); no urine volume is negative."""
    (lo,), = q(f"select min(value) from '{mimic3_timeline}/observations.parquet' where concept = 'urine_output_ml'")
    assert lo >= 0
    (n,), = q(f"select count(*) from '{mimic3_timeline}/observations.parquet' where source like '%227488%'")
    (neg,), = q(f"select coalesce(sum(n), 0) from '{mimic3_timeline}/data_quality.parquet' where issue = 'net_negative_urine_after_irrigant'")
    assert n + neg > 0


def test_implausible_map_values_are_reported_not_loaded(mimic3_timeline: Path) -> None:
    """MAP 220052 has −8 and 326 mmHg in the demo: counted in data_quality, absent from observations."""
    lo_hi = q(f"select min(value), max(value) from '{mimic3_timeline}/observations.parquet' where concept = 'map_mmhg'")[0]
    assert lo_hi[0] > 0 and lo_hi[1] < 300
    dq = q(f"select sum(n) from '{mimic3_timeline}/data_quality.parquet' where source = 'chartevents' and item = '220052' and issue = 'implausible_value'")
    assert dq[0][0] >= 2


def test_rewritten_metavision_orders_are_reported_not_used(mimic3_timeline: Path) -> None:
    """Rewritten MetaVision vasopressor orders are excluded (mimic-code) and counted per stay."""
    (n,), = q(f"select coalesce(sum(n), 0) from '{mimic3_timeline}/data_quality.parquet' where issue = 'rewritten_order'")
    assert n > 0


def test_carevue_rate_holds_until_the_next_charting(mimic3_timeline: Path) -> None:
    """CareVue segments end at the next charting of the same drug (≤ 4 h later) or after 1 h."""
    bad = q(
        f"""select count(*) from '{mimic3_timeline}/infusions.parquet'
            where source like 'inputevents_cv%' and (stop <= start or stop - start > interval 4 hour)"""
    )
    assert bad[0][0] == 0


def test_vasopressin_phenylephrine_and_milrinone_are_kept_by_presence_for_sofa2(mimic3_timeline: Path) -> None:
    """SOFA-2's "other vasopressor or inotrope" agents come through from both CareVue and MetaVision as segments
    with no rate (vasopressin is dosed in units, and SOFA-2 reads presence only); the catecholamines keep theirs."""
    rows = dict(
        (d, (n, rated, systems))
        for d, n, rated, systems in q(
            f"""select drug, count(*), count(rate_ug_kg_min), count(distinct split_part(source, ':', 1))
                from '{mimic3_timeline}/infusions.parquet' group by drug"""
        )
    )
    for drug in ("vasopressin", "phenylephrine", "milrinone"):
        assert rows[drug][0] > 0 and rows[drug][1] == 0, drug
    assert rows["phenylephrine"][2] == 2  # CareVue and MetaVision
    assert rows["norepinephrine"][1] == rows["norepinephrine"][0]


def test_missing_table_is_a_clear_error(tmp_path: Path) -> None:
    """Pointing the adapter at a folder without MIMIC-III tables names the missing table."""
    from immunoguide.cohort.sources.mimic3 import convert_mimic3

    with pytest.raises(InputError, match="icustays"):
        convert_mimic3(tmp_path, tmp_path / "out")
