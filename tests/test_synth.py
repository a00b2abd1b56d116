"""Synthetic MIMIC-IV generator: shape, determinism, clinical coherence, endotype mix and injected bad rows."""

from __future__ import annotations

import hashlib
import tomllib
from importlib import resources
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from immunoguide.cli._synth import synth_app
from immunoguide.errors import InputError
from immunoguide.synth import (
    BAD_ROW_KINDS,
    ENDOTYPE_PRIORS,
    FERRITIN_ITEMID,
    HLA_DR_ITEMID,
    MALS_FERRITIN_NG_PER_ML,
    SII_HLA_DR_AB_PER_CELL,
    TABLE_DIRS,
    generate_mimic4,
)

# MIMIC-IV v2.2 column names per table, written out independently of the generator (issue 4 brief; MIMIC-IV docs).
MIMIC4_COLUMNS = {
    "icustays": "subject_id hadm_id stay_id first_careunit last_careunit intime outtime los",
    "chartevents": "subject_id hadm_id stay_id caregiver_id charttime storetime itemid value valuenum valueuom warning",
    "labevents": "labevent_id subject_id hadm_id specimen_id itemid order_provider_id charttime storetime value "
    "valuenum valueuom ref_range_lower ref_range_upper flag priority comments",
    "inputevents": "subject_id hadm_id stay_id caregiver_id starttime endtime storetime itemid amount amountuom rate "
    "rateuom orderid linkorderid ordercategoryname secondaryordercategoryname ordercomponenttypedescription "
    "ordercategorydescription patientweight totalamount totalamountuom isopenbag continueinnextdept "
    "statusdescription originalamount originalrate",
    "outputevents": "subject_id hadm_id stay_id caregiver_id charttime storetime itemid value valueuom",
    "procedureevents": "subject_id hadm_id stay_id caregiver_id starttime endtime storetime itemid value valueuom "
    "location locationcategory orderid linkorderid ordercategoryname ordercategorydescription patientweight "
    "isopenbag continueinnextdept statusdescription originalamount originalrate",
    "microbiologyevents": "microevent_id subject_id hadm_id micro_specimen_id order_provider_id chartdate charttime "
    "spec_itemid spec_type_desc test_seq storedate storetime test_itemid test_name org_itemid org_name "
    "isolate_num quantity ab_itemid ab_name dilution_text dilution_comparison dilution_value interpretation comments",
    "prescriptions": "subject_id hadm_id pharmacy_id poe_id poe_seq order_provider_id starttime stoptime drug_type "
    "drug formulary_drug_cd gsn ndc prod_strength form_rx dose_val_rx dose_unit_rx form_val_disp form_unit_disp "
    "doses_per_24_hrs route",
    "admissions": "subject_id hadm_id admittime dischtime deathtime admission_type admit_provider_id "
    "admission_location discharge_location insurance language marital_status race edregtime edouttime "
    "hospital_expire_flag",
    "patients": "subject_id gender anchor_age anchor_year anchor_year_group dod",
    "diagnoses_icd": "subject_id hadm_id seq_num icd_code icd_version",
    "d_items": "itemid label abbreviation linksto category unitname param_type lownormalvalue highnormalvalue",
    "d_labitems": "itemid label fluid category",
}
ID_COLUMNS = {
    "subject_id",
    "hadm_id",
    "stay_id",
    "itemid",
    "caregiver_id",
    "labevent_id",
    "specimen_id",
    "orderid",
    "linkorderid",
    "microevent_id",
    "micro_specimen_id",
    "pharmacy_id",
    "spec_itemid",
    "test_itemid",
    "org_itemid",
    "ab_itemid",
}
TIME_COLUMNS = {
    "charttime",
    "storetime",
    "starttime",
    "endtime",
    "intime",
    "outtime",
    "admittime",
    "dischtime",
    "deathtime",
    "edregtime",
    "edouttime",
    "chartdate",
    "storedate",
    "stoptime",
}
FLOAT_COLUMNS = {
    "valuenum",
    "amount",
    "rate",
    "patientweight",
    "totalamount",
    "originalamount",
    "originalrate",
    "los",
    "ref_range_lower",
    "ref_range_upper",
    "dilution_value",
    "doses_per_24_hrs",
    "lownormalvalue",
    "highnormalvalue",
}
# Item ids of the SOFA / Sepsis-3 inputs in ../shared/docs/sofa-sepsis3-reference.md §1.1, §1.4, §2.3.
REFERENCE_ITEMIDS = {
    "chartevents": {220045, 220052, 220181, 225312, 220739, 223901, 223900, 223835},
    "labevents": {50821, 50816, 52033, 51265, 50885, 50912, FERRITIN_ITEMID},
    "outputevents": {226559, 227488},
    "inputevents": {221906, 221289, 221662, 221653},
    "procedureevents": {225792, 225794},
}


def _read(out: Path, table: str) -> pa.Table:
    return pq.read_table(out / TABLE_DIRS[table])


def _digest(out: Path) -> dict[str, str]:
    return {str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(out.rglob("*.parquet"))}


def _db(out: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    for name, rel in TABLE_DIRS.items():
        con.execute(f"CREATE VIEW \"{name.split('/')[-1]}\" AS SELECT * FROM read_parquet('{out / rel}/*.parquet')")
    return con


@pytest.fixture(scope="module")
def synth_2000(tmp_path_factory: pytest.TempPathFactory):
    """2,000 stays with the default settings (shared by the slower checks)."""
    out = tmp_path_factory.mktemp("synth2000")
    summary = generate_mimic4(out, stays=2000, seed=7, chunk_stays=700)
    return out, summary


@pytest.fixture(scope="module")
def synth_300_dirty(tmp_path_factory: pytest.TempPathFactory):
    """300 stays with a high bad-row rate (1 %) so that every kind of bad row occurs."""
    out = tmp_path_factory.mktemp("synth300")
    summary = generate_mimic4(out, stays=300, seed=11, chunk_stays=120, bad_row_rate=0.01)
    return out, summary


# ---------------------------------------------------------------------------------------------- determinism, size


def test_same_seed_writes_byte_identical_files(synth_300_dirty, tmp_path: Path) -> None:
    """A second run with the same seed and chunk size writes the same bytes in every Parquet file."""
    out, first = synth_300_dirty
    again = generate_mimic4(tmp_path, stays=300, seed=11, chunk_stays=120, bad_row_rate=0.01)
    assert again.rows == first.rows
    assert _digest(tmp_path) == _digest(out)
    assert len(list((out / "icu" / "chartevents").glob("part-*.parquet"))) == 3


def test_content_does_not_depend_on_chunk_size(synth_300_dirty, tmp_path: Path) -> None:
    """Chunking only decides where files are cut: tables are equal for 120-stay (split blocks) and 1000-stay chunks."""
    out, _ = synth_300_dirty
    generate_mimic4(tmp_path, stays=300, seed=11, chunk_stays=1000, bad_row_rate=0.01)
    assert len(list((tmp_path / "icu" / "chartevents").glob("part-*.parquet"))) == 1
    for table in TABLE_DIRS:
        assert _read(out, table).equals(_read(tmp_path, table)), table


def test_different_seed_gives_different_data(tmp_path: Path) -> None:
    """Another seed changes the events (and not only the ids)."""
    generate_mimic4(tmp_path / "a", stays=60, seed=1)
    generate_mimic4(tmp_path / "b", stays=60, seed=2)
    va = _read(tmp_path / "a", "chartevents").column("valuenum")
    vb = _read(tmp_path / "b", "chartevents").column("valuenum")
    assert va.to_pylist()[:500] != vb.to_pylist()[:500]


def test_row_counts_scale_linearly_with_stays(tmp_path: Path) -> None:
    """Four times the stays gives about four times the rows of every event table (±25 %)."""
    s1 = generate_mimic4(tmp_path / "a", stays=150, seed=3)
    s4 = generate_mimic4(tmp_path / "b", stays=600, seed=3)
    for table in ("chartevents", "labevents", "inputevents", "outputevents", "microbiologyevents", "prescriptions"):
        assert 3.0 < s4.rows[table] / s1.rows[table] < 5.0, table
    assert s4.rows["icustays"] == 600 and s4.rows["admissions"] == 600


def test_about_a_thousand_events_per_stay_mostly_charted(synth_2000) -> None:
    """The default model yields 700-1,400 events per stay, more than three quarters of them in chartevents.

    How fast the generator is (2,000 stays took a few seconds) is measured by ``benchmarks/bench_synth.py``,
    never asserted here: a loaded machine made this test fail at 22.6 s.
    """
    _, summary = synth_2000
    assert 700 <= summary.events / summary.stays <= 1400
    assert summary.rows["chartevents"] > 0.75 * summary.events


def test_bad_arguments_are_rejected_with_input_error(tmp_path: Path) -> None:
    """Zero stays, a rate outside [0, 0.5] or an unknown prior raise InputError naming the field."""
    for kwargs, field in (
        (dict(stays=0), "stays"),
        (dict(stays=5, bad_row_rate=0.9), "bad_row_rate"),
        (dict(stays=5, endotype_prior="nope"), "endotype_prior"),
    ):
        with pytest.raises(InputError) as exc:
            generate_mimic4(tmp_path / field, seed=1, **kwargs)  # type: ignore[arg-type]
        assert exc.value.field == field


def test_existing_output_is_not_overwritten_unless_asked(tmp_path: Path) -> None:
    """A second run into the same directory fails; overwrite=True replaces generator output and nothing else."""
    generate_mimic4(tmp_path, stays=30, seed=1, chunk_stays=10)
    with pytest.raises(InputError):
        generate_mimic4(tmp_path, stays=30, seed=1)
    generate_mimic4(tmp_path, stays=30, seed=1, chunk_stays=100, overwrite=True)
    assert len(list((tmp_path / "icu" / "chartevents").glob("*.parquet"))) == 1
    real = tmp_path / "real"
    (real / "hosp" / "patients").mkdir(parents=True)
    (real / "hosp" / "patients" / "patients.csv.gz").write_bytes(b"")
    with pytest.raises(InputError):  # never deletes data it did not write, even with overwrite=True
        generate_mimic4(real, stays=30, seed=1, overwrite=True)
    assert (real / "hosp" / "patients" / "patients.csv.gz").exists()


# ---------------------------------------------------------------------------------------------- shape


def test_every_table_has_the_mimic4_columns_with_sensible_types(synth_300_dirty) -> None:
    """Column names and order are MIMIC-IV's; ids are integers, times are timestamps, measurements are floats."""
    out, _ = synth_300_dirty
    for table, names in MIMIC4_COLUMNS.items():
        schema = pq.read_schema(next((out / TABLE_DIRS[table]).glob("*.parquet")))
        assert schema.names == names.split(), table
        for f in schema:
            if f.name in ID_COLUMNS:
                assert pa.types.is_integer(f.type), (table, f.name)
            elif f.name in TIME_COLUMNS:
                assert pa.types.is_timestamp(f.type), (table, f.name)
            elif f.name in FLOAT_COLUMNS:
                assert pa.types.is_floating(f.type), (table, f.name)
    assert pq.read_schema(next((out / "hosp/patients").glob("*.parquet"))).field("dod").type == pa.date32()
    assert pq.read_schema(next((out / "icu/chartevents").glob("*.parquet"))).field("value").type == pa.string()


def test_reference_item_ids_are_used_and_every_other_itemid_is_in_the_dictionaries(synth_300_dirty) -> None:
    """The SOFA inputs use the reference doc's item ids; only injected bad rows carry unknown item ids."""
    out, _ = synth_300_dirty
    con = _db(out)
    for table, ids in REFERENCE_ITEMIDS.items():
        used = {r[0] for r in con.execute(f"SELECT DISTINCT itemid FROM {table}").fetchall()}
        assert ids <= used, (table, ids - used)
    unknown = con.execute("""
        SELECT count(*) FROM (SELECT itemid FROM chartevents UNION ALL SELECT itemid FROM inputevents
                              UNION ALL SELECT itemid FROM outputevents UNION ALL SELECT itemid FROM procedureevents)
        WHERE itemid NOT IN (SELECT itemid FROM d_items)""").fetchone()[0]
    unknown += con.execute(
        "SELECT count(*) FROM labevents WHERE itemid NOT IN (SELECT itemid FROM d_labitems)"
    ).fetchone()[0]
    truth = con.execute("SELECT count(*) FROM bad_rows WHERE kind = 'unknown_itemid'").fetchone()[0]
    assert unknown == truth > 0


def test_ids_are_unique_across_blocks_and_groups_never_span_two_admissions(synth_300_dirty) -> None:
    """Event ids are unique; a lab specimen, a culture specimen and an infusion order each belong to one admission."""
    out, _ = synth_300_dirty
    con = _db(out)
    checks = {
        "labevent_id unique": "SELECT count(*) - count(DISTINCT labevent_id) FROM labevents",
        "microevent_id unique": "SELECT count(*) - count(DISTINCT microevent_id) FROM microbiologyevents",
        "orderid unique": "SELECT count(*) - count(DISTINCT orderid) FROM inputevents",
        "pharmacy_id unique": "SELECT count(*) - count(DISTINCT pharmacy_id) FROM prescriptions",
        "stay_id unique": "SELECT count(*) - count(DISTINCT stay_id) FROM icustays",
        "specimen_id in one admission": "SELECT count(*) FROM (SELECT specimen_id FROM labevents GROUP BY 1 "
        "HAVING count(DISTINCT hadm_id) > 1)",
        "micro_specimen_id in one admission": "SELECT count(*) FROM (SELECT micro_specimen_id FROM "
        "microbiologyevents GROUP BY 1 HAVING count(DISTINCT hadm_id) > 1)",
        "linkorderid one stay and drug": "SELECT count(*) FROM (SELECT linkorderid FROM inputevents GROUP BY 1 "
        "HAVING count(DISTINCT stay_id) > 1 OR count(DISTINCT itemid) > 1)",
    }
    for name, sql in checks.items():
        assert con.execute(sql).fetchone()[0] == 0, name
    assert con.execute("SELECT count(DISTINCT specimen_id) FROM labevents").fetchone()[0] > 1000


def test_ferritin_and_synthetic_hla_dr_are_labelled_as_documented(synth_300_dirty) -> None:
    """Ferritin is 50924 in ng/mL; HLA-DR is the synthetic 990001 in AB/c with a method comment saying so."""
    out, _ = synth_300_dirty
    con = _db(out)
    assert con.execute(f"SELECT label FROM d_labitems WHERE itemid = {FERRITIN_ITEMID}").fetchone()[0] == "Ferritin"
    assert (
        con.execute(f"SELECT label FROM d_labitems WHERE itemid = {HLA_DR_ITEMID}").fetchone()[0]
        == "Monocyte HLA-DR (QuantiBRITE)"
    )
    uoms = con.execute(f"""SELECT itemid, list(DISTINCT valueuom), list(DISTINCT comments) FROM labevents
                           WHERE itemid IN ({FERRITIN_ITEMID}, {HLA_DR_ITEMID}) GROUP BY 1 ORDER BY 1""").fetchall()
    assert uoms[0][1] == ["ng/mL"]
    assert uoms[1][1] == ["AB/c"]
    assert len(uoms[1][2]) == 1 and "QuantiBRITE" in uoms[1][2][0] and "SYNTHETIC" in uoms[1][2][0]


def test_protocol_thresholds_match_the_immunosep_protocol_file() -> None:
    """The generator's 4420 ng/mL and 5000 AB/c are the numbers in protocols/immunosep-2025.toml."""
    text = resources.files("immunoguide.protocols").joinpath("immunosep-2025.toml").read_text("utf-8")
    doc = tomllib.loads(text)
    crits = [c for e in doc["classification"]["endotypes"] for c in e["all_of"]]
    ferritin = {c["threshold"] for c in crits if c["analyte"] == "ferritin"}
    hla = {c["threshold"] for c in crits if c["analyte"] == "hla_dr"}
    assert ferritin == {MALS_FERRITIN_NG_PER_ML} and hla == {SII_HLA_DR_AB_PER_CELL}


# ---------------------------------------------------------------------------------------------- clinical content


def test_endotype_mix_among_screened_infected_stays_matches_immunosep_screening(synth_2000) -> None:
    """Classified from the lab rows themselves, screened stays are ~7 % MALS, ~34 % immunoparalysis, ~53 % unclassified."""
    out, summary = synth_2000
    con = _db(out)
    rows = con.execute(f"""
        WITH f AS (SELECT hadm_id, valuenum x FROM labevents WHERE itemid = {FERRITIN_ITEMID}
                   QUALIFY row_number() OVER (PARTITION BY hadm_id ORDER BY charttime) = 1),
             h AS (SELECT hadm_id, valuenum x FROM labevents WHERE itemid = {HLA_DR_ITEMID}
                   QUALIFY row_number() OVER (PARTITION BY hadm_id ORDER BY charttime) = 1)
        SELECT s.stay_id, s.endotype_observable,
               CASE WHEN f.x IS NULL THEN 'indeterminate'
                    WHEN f.x > {MALS_FERRITIN_NG_PER_ML} THEN 'MALS'
                    WHEN h.x IS NULL THEN 'indeterminate'
                    WHEN h.x < {SII_HLA_DR_AB_PER_CELL} THEN 'immunoparalysis'
                    ELSE 'unclassified' END AS from_data, s.infected
        FROM stays s JOIN f USING (hadm_id) LEFT JOIN h USING (hadm_id)
        WHERE s.screened""").fetchall()
    assert all(r[3] for r in rows)  # only infected stays are screened
    early = con.execute("""SELECT count(*) FROM stays s JOIN icustays i USING (stay_id) WHERE s.screened
                           AND (s.screen_time < s.infection_onset OR s.screen_time < i.intime
                                OR s.screen_time > i.outtime)""").fetchone()[0]
    assert early == 0  # screening happens in the ICU, after the infection began
    assert all(r[1] == r[2] for r in rows)  # the truth sidecar agrees with what the data show
    n = len(rows)
    assert n > 700
    share = {e: sum(r[2] == e for r in rows) / n for e in ("MALS", "immunoparalysis", "unclassified")}
    mals, sii, unc = ENDOTYPE_PRIORS["immunosep"]
    assert abs(share["MALS"] - mals) < 0.025
    assert abs(share["immunoparalysis"] - sii) < 0.045
    assert abs(share["unclassified"] - unc) < 0.045
    assert summary.endotypes_observable["MALS"] == sum(r[2] == "MALS" for r in rows)


def test_provide_prior_without_censoring_gives_the_provide_mix_and_no_indeterminate(tmp_path: Path) -> None:
    """With endotype_prior='provide' and no censoring, screened stays are ~20 % MALS, ~43 % immunoparalysis, ~37 %."""
    summary = generate_mimic4(tmp_path, stays=900, seed=21, endotype_prior="provide", censored_ferritin_rate=0.0)
    counts = summary.endotypes_observable
    n = sum(counts.values())
    assert n > 350 and counts["indeterminate"] == 0
    for name, target in zip(("MALS", "immunoparalysis", "unclassified"), ENDOTYPE_PRIORS["provide"], strict=True):
        assert abs(counts[name] / n - target) < 0.07, name


def test_censored_ferritin_is_text_with_null_valuenum_and_only_above_the_limit(synth_2000, tmp_path: Path) -> None:
    """Some ferritin results read 'GREATER THAN 2000' with valuenum NULL; none when the censoring rate is 0."""
    out, _ = synth_2000
    con = _db(out)
    n_cens, n_other_text = con.execute(f"""
        SELECT count(*) FILTER (WHERE value = 'GREATER THAN 2000' AND valuenum IS NULL),
               count(*) FILTER (WHERE valuenum IS NULL AND value <> 'GREATER THAN 2000')
        FROM labevents WHERE itemid = {FERRITIN_ITEMID}""").fetchone()
    assert n_cens > 5 and n_other_text == 0
    wrong = con.execute("""SELECT count(*) FROM stays WHERE ferritin_censored AND ferritin_true_ng_per_ml <= 2000
                         """).fetchone()[0]
    assert wrong == 0
    generate_mimic4(tmp_path, stays=200, seed=7, censored_ferritin_rate=0.0)
    none = (
        _db(tmp_path)
        .execute(f"SELECT count(*) FROM labevents WHERE itemid = {FERRITIN_ITEMID} AND valuenum IS NULL")
        .fetchone()[0]
    )
    assert none == 0


def test_vasopressor_infusions_change_rate_within_a_linkorderid_and_some_last_under_an_hour(synth_2000) -> None:
    """Norepinephrine orders are successive contiguous rows with different rates; some infusions run < 1 h."""
    out, _ = synth_2000
    con = _db(out)
    multi, contiguous, varying = con.execute("""
        WITH r AS (SELECT linkorderid, starttime, endtime, rate,
                          lead(starttime) OVER (PARTITION BY linkorderid ORDER BY starttime) AS next_start
                   FROM inputevents WHERE itemid = 221906)
        SELECT count(DISTINCT linkorderid) FILTER (WHERE next_start IS NOT NULL),
               avg(CASE WHEN next_start IS NOT NULL THEN (next_start = endtime)::INT END),
               (SELECT count(*) FROM (SELECT linkorderid FROM r GROUP BY 1 HAVING count(DISTINCT rate) > 1))
        FROM r""").fetchone()
    assert multi > 50 and contiguous == 1.0 and varying > 50
    short, total = con.execute("""
        SELECT count(*) FILTER (WHERE e - s < INTERVAL 1 HOUR), count(*) FROM
        (SELECT linkorderid, min(starttime) s, max(endtime) e FROM inputevents WHERE itemid = 221906 GROUP BY 1)
        """).fetchone()
    assert 0 < short < 0.5 * total
    uoms = {
        r[0]
        for r in con.execute(
            "SELECT DISTINCT rateuom FROM inputevents WHERE itemid IN (221289, 221662, 221653)"
        ).fetchall()
    }
    assert uoms == {"mcg/kg/min"}


def test_heart_rate_spans_the_stay_and_chart_rows_stay_inside_icu_times(synth_2000) -> None:
    """First and last heart rate lie within an hour of intime/outtime; no chart row is outside the ICU stay."""
    out, _ = synth_2000
    con = _db(out)
    first_late, last_early, outside = con.execute("""
        WITH hr AS (SELECT stay_id, min(charttime) f, max(charttime) l FROM chartevents WHERE itemid = 220045
                    GROUP BY 1)
        SELECT count(*) FILTER (WHERE f > intime + INTERVAL 1 HOUR OR f < intime),
               count(*) FILTER (WHERE l < outtime - INTERVAL 1 HOUR OR l > outtime),
               (SELECT count(*) FROM chartevents c JOIN icustays i USING (stay_id)
                 WHERE c.charttime < i.intime OR c.charttime > i.outtime)
        FROM hr JOIN icustays USING (stay_id)""").fetchone()
    assert (first_late, last_early, outside) == (0, 0, 0)


def test_ett_verbal_gcs_only_while_invasively_ventilated(synth_2000) -> None:
    """'No Response-ETT' is charted only inside an invasive-ventilation (225792) interval, and it is charted."""
    out, _ = synth_2000
    con = _db(out)
    total, inside = con.execute("""
        SELECT count(*), count(*) FILTER (WHERE EXISTS (SELECT 1 FROM procedureevents p WHERE p.stay_id = c.stay_id
               AND p.itemid = 225792 AND c.charttime BETWEEN p.starttime AND p.endtime))
        FROM chartevents c WHERE itemid = 223900 AND value = 'No Response-ETT'""").fetchone()
    assert total > 100 and inside == total


def test_organ_dysfunction_worsens_after_icu_acquired_infection_onset(synth_2000) -> None:
    """For infections starting in the ICU, creatinine rises and platelets fall from the day before to the day after."""
    out, _ = synth_2000
    con = _db(out)
    d_creat, d_plt, n = con.execute("""
        WITH w AS (
          SELECT s.stay_id, l.itemid,
                 avg(l.valuenum) FILTER (WHERE l.charttime BETWEEN s.infection_onset - INTERVAL 30 HOUR
                                                              AND s.infection_onset) AS before,
                 avg(l.valuenum) FILTER (WHERE l.charttime BETWEEN s.infection_onset + INTERVAL 12 HOUR
                                                              AND s.infection_onset + INTERVAL 42 HOUR) AS after
          FROM stays s JOIN labevents l USING (hadm_id)
          WHERE s.onset_kind = 'icu' AND l.itemid IN (50912, 51265) AND l.valuenum < 9999
          GROUP BY ALL)
        SELECT avg(after - before) FILTER (WHERE itemid = 50912), avg(after - before) FILTER (WHERE itemid = 51265),
               count(DISTINCT stay_id) FROM w WHERE before IS NOT NULL AND after IS NOT NULL""").fetchone()
    assert n > 30
    assert d_creat > 0.1 and d_plt < -10


def test_infection_sources_show_in_diagnoses_and_cultures(synth_2000) -> None:
    """Infected stays carry their source's ICD code; pneumonia gets sputum, urinary gets urine cultures."""
    out, _ = synth_2000
    con = _db(out)
    codes = {
        "pneumonia": ("J189", "486"),
        "bacteremia": ("R7881", "7907"),
        "urinary": ("N390", "5990"),
        "abdominal": ("K659", "5679"),
    }
    for source, (c10, c9) in codes.items():
        missing = con.execute(f"""SELECT count(*) FROM stays s WHERE source = '{source}' AND NOT EXISTS
            (SELECT 1 FROM diagnoses_icd d WHERE d.hadm_id = s.hadm_id AND d.icd_code IN ('{c10}', '{c9}'))
            """).fetchone()[0]
        assert missing == 0, source
    wrong = con.execute("""SELECT count(*) FROM stays s JOIN diagnoses_icd d USING (hadm_id)
                           WHERE NOT s.infected AND d.icd_code IN ('J189','486','R7881','7907','N390','5990',
                                                                    'K659','5679')""").fetchone()[0]
    assert wrong == 0
    by_source = dict(
        con.execute("""SELECT s.source, count(DISTINCT s.stay_id) FROM stays s
        JOIN microbiologyevents m USING (hadm_id)
        WHERE (s.source = 'pneumonia' AND m.spec_type_desc = 'SPUTUM')
           OR (s.source = 'urinary' AND m.spec_type_desc = 'URINE') GROUP BY 1""").fetchall()
    )
    assert by_source["pneumonia"] > 0 and by_source["urinary"] > 0


def test_cultures_are_positive_or_negative_and_some_have_only_a_date(synth_2000) -> None:
    """Positive cultures name an organism, negatives have NULL org_itemid, ~5 % have charttime NULL and a chartdate."""
    out, _ = synth_2000
    con = _db(out)
    pos, neg, date_only, no_date, types = con.execute("""
        SELECT count(DISTINCT micro_specimen_id) FILTER (WHERE org_name IS NOT NULL),
               count(DISTINCT micro_specimen_id) FILTER (WHERE org_itemid IS NULL),
               count(*) FILTER (WHERE charttime IS NULL), count(*) FILTER (WHERE chartdate IS NULL),
               list(DISTINCT spec_type_desc ORDER BY spec_type_desc)
        FROM microbiologyevents""").fetchone()
    assert pos > 100 and neg > 100 and date_only > 0 and no_date == 0
    assert {"BLOOD CULTURE", "SPUTUM", "URINE"} <= set(types)


def test_antibiotics_are_prescribed_near_cultures_for_infected_stays(synth_2000) -> None:
    """Most infected stays get an antibiotic within 72 h of a culture (Sepsis-3 pairing); names and routes are real."""
    out, _ = synth_2000
    con = _db(out)
    paired = con.execute("""
        SELECT avg(ok::INT) FROM (SELECT s.stay_id, EXISTS (
            SELECT 1 FROM prescriptions p JOIN microbiologyevents m USING (hadm_id)
            WHERE p.hadm_id = s.hadm_id AND p.drug IN ('Vancomycin', 'Piperacillin-Tazobactam', 'Ceftriaxone',
                                                      'Meropenem', 'CefePIME', 'Levofloxacin')
              AND p.starttime BETWEEN coalesce(m.charttime, m.chartdate) - INTERVAL 24 HOUR
                                  AND coalesce(m.charttime, m.chartdate) + INTERVAL 72 HOUR) AS ok
            FROM stays s WHERE s.infected)""").fetchone()[0]
    assert paired > 0.9
    routes = {r[0] for r in con.execute("SELECT DISTINCT route FROM prescriptions").fetchall()}
    assert {"IV", "PO"} <= routes


def test_deaths_are_consistent_across_admissions_and_patients(synth_2000) -> None:
    """deathtime ⇔ hospital_expire_flag = 1 ⇔ discharge at death, and every such subject has a dod on that day."""
    out, _ = synth_2000
    con = _db(out)
    bad_flag, bad_disch, bad_dod, deaths = con.execute("""
        SELECT count(*) FILTER (WHERE (deathtime IS NOT NULL) <> (hospital_expire_flag = 1)),
               count(*) FILTER (WHERE deathtime IS NOT NULL AND deathtime <> dischtime),
               count(*) FILTER (WHERE deathtime IS NOT NULL AND (p.dod IS NULL OR p.dod <> deathtime::DATE)),
               count(*) FILTER (WHERE deathtime IS NOT NULL)
        FROM admissions a JOIN patients p USING (subject_id)""").fetchone()
    assert (bad_flag, bad_disch, bad_dod) == (0, 0, 0)
    assert 0.05 < deaths / 2000 < 0.25


# ---------------------------------------------------------------------------------------------- bad rows


def test_bad_rows_occur_at_the_configured_rate_and_are_recorded_in_truth(synth_300_dirty) -> None:
    """With bad_row_rate=0.01 about 1 % of chart/lab/input/output rows are bad; per-stay truth sums to the detail."""
    out, summary = synth_300_dirty
    con = _db(out)
    detail = dict(con.execute("SELECT kind, count(*) FROM bad_rows GROUP BY 1").fetchall())
    assert set(detail) == set(BAD_ROW_KINDS)
    per_stay = con.execute("SELECT " + ", ".join(f"sum(bad_{k})" for k in BAD_ROW_KINDS) + " FROM stays").fetchone()
    assert dict(zip(BAD_ROW_KINDS, per_stay, strict=True)) == detail == dict(summary.bad_rows)
    eligible = sum(summary.rows[t] for t in ("chartevents", "labevents", "outputevents"))
    eligible += con.execute("SELECT count(*) FROM inputevents WHERE rate IS NOT NULL").fetchone()[0]
    ferritin_hla = con.execute(
        f"SELECT count(*) FROM labevents WHERE itemid IN ({FERRITIN_ITEMID}, {HLA_DR_ITEMID})"
    ).fetchone()[0]
    assert 0.008 < sum(detail.values()) / (eligible - ferritin_hla) < 0.012


def test_injected_bad_rows_are_detectable_exactly_as_recorded(synth_300_dirty) -> None:
    """'ERROR' values, 99999 values, µmol/L bilirubin/creatinine and outputs before intime match the truth counts."""
    out, _ = synth_300_dirty
    con = _db(out)
    truth = dict(con.execute("SELECT \"table\" || '/' || kind, count(*) FROM bad_rows GROUP BY 1").fetchall())
    seen = {
        "chartevents/text_in_numeric": "SELECT count(*) FROM chartevents WHERE value = 'ERROR' AND valuenum IS NULL",
        "labevents/text_in_numeric": "SELECT count(*) FROM labevents WHERE value = 'ERROR' AND valuenum IS NULL",
        "chartevents/implausible": "SELECT count(*) FROM chartevents WHERE valuenum = 99999",
        "labevents/implausible": "SELECT count(*) FROM labevents WHERE valuenum = 99999",
        "labevents/unit_mismatch": "SELECT count(*) FROM labevents WHERE itemid IN (50885, 50912) "
        "AND valueuom = 'umol/L'",
        "inputevents/unit_mismatch": "SELECT count(*) FROM inputevents WHERE itemid = 221906 AND rateuom = 'mg/kg/min'",
        "outputevents/before_intime": "SELECT count(*) FROM outputevents o JOIN icustays i USING (stay_id) "
        "WHERE o.charttime < i.intime",
        "outputevents/implausible": "SELECT count(*) FROM outputevents WHERE value = 99999",
    }
    for key, sql in seen.items():
        assert con.execute(sql).fetchone()[0] == truth.get(key, 0) > 0, key
    plt = con.execute("SELECT count(*) FROM labevents WHERE itemid = 51265 AND valuenum = 99999").fetchone()[0]
    assert plt > 0


def test_zero_bad_row_rate_gives_clean_data(tmp_path: Path) -> None:
    """bad_row_rate=0 injects nothing: no 'ERROR' values, no 99999 and an empty truth detail table."""
    summary = generate_mimic4(tmp_path, stays=120, seed=4, bad_row_rate=0.0)
    con = _db(tmp_path)
    assert sum(summary.bad_rows.values()) == 0
    assert con.execute("SELECT count(*) FROM bad_rows").fetchone()[0] == 0
    assert con.execute("SELECT count(*) FROM labevents WHERE value = 'ERROR' OR valuenum = 99999").fetchone()[0] == 0


# ---------------------------------------------------------------------------------------------- CLI


def test_cli_mimic4_writes_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    """`synth mimic4 --stays 40 --seed 1 --out DIR` exits 0 and writes Parquet; a second run exits 2 unless --overwrite."""
    runner = CliRunner()
    args = ["mimic4", "--stays", "40", "--seed", "1", "--out", str(tmp_path), "--chunk-stays", "25"]
    res = runner.invoke(synth_app, args)
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "icu" / "chartevents").glob("part-*.parquet"))) == 2
    assert (tmp_path / "_truth" / "summary.json").exists()
    res = runner.invoke(synth_app, args)
    assert res.exit_code == 2 and "IG-E100" in res.output
    res = runner.invoke(synth_app, [*args, "--overwrite", "--bad-row-rate", "0", "--quiet"])
    assert res.exit_code == 0, res.output
