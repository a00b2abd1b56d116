"""Synthetic MIMIC-IV-shaped ICU data at any size, clinically coherent, for tests and benchmarks.

:func:`generate_mimic4` writes the tables of MIMIC-IV (``hosp/`` and ``icu/`` modules, real column names and item ids)
plus a sidecar ``_truth/`` directory that records what was drawn (infection, source, immune endotype, injected bad
rows). **The pipeline must never read** ``_truth/``: it exists only so tests can check that the pipeline finds what
the generator put there.

Layouts (``layout=``; the same rows and values in each)::

    parquet-parts (default): one directory per table, one file per chunk of stays
        OUT/hosp/{patients,admissions,diagnoses_icd,labevents,microbiologyevents,prescriptions}/part-00000.parquet …
        OUT/icu/{icustays,chartevents,inputevents,outputevents,procedureevents}/part-00000.parquet …
        OUT/hosp/d_labitems/part-00000.parquet, OUT/icu/d_items/part-00000.parquet   (minimal dictionaries)
    physionet-csv: OUT/hosp/<table>.csv.gz, OUT/icu/<table>.csv.gz, as PhysioNet distributes MIMIC-IV
    physionet-parquet: OUT/hosp/<table>.parquet, OUT/icu/<table>.parquet
    duckdb: OUT/mimic4.db with schemas mimiciv_hosp and mimiciv_icu, built as MIT-LCP/mimic-code
        mimic-iv/buildmimic/duckdb/import_duckdb.sh builds it (tables with create.sql's types, then COPY from the
        csv.gz files): its FLOAT columns are single precision, as in a real mimic-code database
    always: OUT/_truth/stays/part-*.parquet, OUT/_truth/bad_rows/part-*.parquet, OUT/_truth/summary.json

Column sets (``mimic_version=``): ``"2.2"`` (default) and ``"3.1"`` write the columns of MIMIC-IV v2.2, which v3.0 and
v3.1 share in these tables; ``"2.0"`` leaves out the provider columns v2.2 added (``caregiver_id``,
``order_provider_id``, ``admit_provider_id``). The columns are those of
:func:`immunoguide.cohort.sources.mimic4_tables.mimic4_columns`; every other column's values do not depend on it.

Model (per stay, vectorised with numpy over blocks of stays):

* a latent **severity** in [0, 1] and **infection** status (default 55 % infected; sources pneumonia, bacteremia,
  urinary, abdominal, coded in ``diagnoses_icd`` with ICD-10 or ICD-9 codes and reflected in culture specimens);
* six organ-dysfunction levels (respiration, coagulation, liver, cardiovascular, CNS, renal) that rise around the
  infection onset (or the admitting insult), plateau, and recover, or keep worsening until death; every charted
  value, lab, urine output, vasopressor rate, ventilation episode and GCS is a noisy function of those levels, so
  SOFA worsens around infection onset for septic stays;
* irregular charting (hourly-ish vitals with jitter and gaps; heart rate 220045 spans the stay), labs every 8–24 h
  with panels missing at realistic rates, blood gases with specimen type (52033), infusions with rate changes as
  successive rows sharing a ``linkorderid`` (some shorter than 1 h), cultures (positive and negative, some with only
  ``chartdate``) and antibiotics paired in time as in clinical practice, deaths (``admissions.deathtime``,
  ``patients.dod``).

Item ids are those of the project's reference document (``sofa-sepsis3-reference.md`` §1.1, §1.4, §2.3): MAP
220052/220181/225312, heart rate 220045, GCS 220739/223901/223900 (``'No Response-ETT'`` while intubated), FiO2
223835 (percent; about 2 % charted as a fraction, a known MIMIC quirk), pO2 50821, lab FiO2 50816, specimen 52033,
platelets 51265, bilirubin 50885, creatinine 50912, urine 226559 … and irrigant 227488, vasopressors 221906 / 221289 /
221662 / 221653 (rates in mcg/kg/min), ventilation 225792 / 225794. Ferritin is labevents 50924 (LOINC 2276-4, ng/mL).

**Synthetic extension — monocyte HLA-DR.** MIMIC has no monocyte HLA-DR. It is written to ``labevents`` with
itemid :data:`HLA_DR_ITEMID` (990001, outside MIMIC's range), label ``"Monocyte HLA-DR (QuantiBRITE)"``, unit
``AB/c`` (antibodies bound per CD45+/CD14+ monocyte) and a ``comments`` value naming the method and saying the item
is synthetic. Screened infected stays get one ferritin and one HLA-DR result (the HLA-DR result is missing for a
calibrated fraction: "sample not processed"); draws are calibrated so that the *observable* classification among
screened stays matches the ImmunoSep screening prior (immunosep-spec §7.3: MALS 7.1 %, immunoparalysis 33.9 %,
unclassified about 53 %; the rest indeterminate) or, with ``endotype_prior="provide"``, PROVIDE (§7.2: 20.0 % /
42.9 % / 37.1 %). Ferritin results above the assay's reporting limit are reported censored (``"GREATER THAN 2000"``,
``valuenum`` NULL) with probability ``censored_ferritin_rate``.

**Bad rows** (for data-quality tests): each eligible event row is turned bad with probability ``bad_row_rate``;
kinds are ``unknown_itemid`` (an itemid absent from the dictionaries), ``text_in_numeric`` (``value='ERROR'``,
``valuenum`` NULL), ``implausible`` (99999, e.g. platelets 99999), ``unit_mismatch`` (bilirubin or creatinine in
``umol/L``; norepinephrine in ``mg/kg/min``), ``before_intime`` (an output charted before ``icustays.intime``).
Ferritin and HLA-DR rows, and the first and last heart rate of each stay (they define the stay's charted span),
are never made bad, so the endotype truth and the hourly grid stay exact.

Determinism: the same ``seed`` gives byte-identical files for the same ``chunk_stays`` (Parquet and csv.gz; a DuckDB
database file holds the same rows but is not byte-identical); the concatenated content of every table (rows, order
and values) does not depend on ``chunk_stays`` (stays are generated in fixed internal blocks of :data:`BLOCK_STAYS`
stays, each with its own random streams; chunks only decide where files are cut).

Realism traps on purpose: bedside copies of platelets, creatinine and bilirubin in ``chartevents`` (227457, 220615,
225690), FiO2 occasionally charted as a fraction, ICD-9 and ICD-10 codes side by side, cultures with only a date,
topical and ophthalmic antibiotics and ``BASE`` diluent rows in ``prescriptions``, suspected-infection work-ups
(cultures + short antibiotic courses) in non-infected stays, and norepinephrine rates stored in single precision.

The ImmunoSep "indeterminate" remainder (about 6 % of screened: 41 of 672 screened were neither MALS, immunoparalysis
nor unclassified, spec §2.1) is represented by a missing HLA-DR result or a censored ferritin; ``_truth/stays``
records both the latent (``endotype_true``) and the data-supported (``endotype_observable``) class.

Simplifications (synthetic, not MIMIC facts): one ICU stay per hospital admission (about 7 % of admissions are a
later admission of the same subject); item labels of ``d_items`` / ``d_labitems`` and the microbiology specimen,
organism and antibiotic ids were checked against the MIMIC-III Clinical Database Demo v1.4 (MetaVision item ids are
shared with MIMIC-IV); ``test_itemid`` values other than 90201 (``Blood Culture, Routine``) and 90039
(``URINE CULTURE``), drug formulary codes and provider ids are placeholders.

Modules (private; the public names are re-exported here)::

    _catalogue    protocol thresholds, endotype priors, item ids, codes and catalogues the draws use
    _model        the patient / ICU model: settings, latent stays, organ-dysfunction levels, endotype draws
    _icu_events   chartevents, inputevents, procedureevents, outputevents from the latent stays
    _hosp_events  labevents, microbiologyevents, prescriptions (and antibiotic inputevents)
    _stay_tables  patients, admissions, diagnoses_icd, icustays and the _truth/stays sidecar
    _faults       bad-row injection and the _truth/bad_rows record
    _block        one block of stays: emitters and faults on the block's random streams, ids across blocks
    _tables       Arrow schemas, table directories, column sets per release, dictionaries
    _writers      output directory checks, chunked Parquet parts, the other layouts (csv.gz, Parquet, DuckDB)
    _generate     generate_mimic4 and SynthSummary

The package imports nothing of immunoguide but :mod:`immunoguide.errors` and the MIMIC-IV table catalogue
:mod:`immunoguide.cohort.sources.mimic4_tables` (column names and types per release, shared with the reader).

Contains information from the MIMIC-III Clinical Database Demo (https://physionet.org/content/mimiciii-demo/1.4/),
which is made available under the Open Database License (ODbL) v1.0 (https://opendatacommons.org/licenses/odbl/1-0/).

>>> import tempfile
>>> with tempfile.TemporaryDirectory() as d:
...     s = generate_mimic4(d, stays=20, seed=1)
>>> s.rows["icustays"], s.rows["chartevents"] > 20 * 100
(20, True)
"""

from immunoguide.synth._catalogue import (
    BAD_ROW_KINDS,
    BLOCK_STAYS,
    ENDOTYPE_PRIORS,
    FERRITIN_ITEMID,
    HLA_DR_ITEMID,
    MALS_FERRITIN_NG_PER_ML,
    SII_HLA_DR_AB_PER_CELL,
)
from immunoguide.synth._generate import SynthSummary, generate_mimic4
from immunoguide.synth._tables import DUCKDB_FILE, LAYOUTS, MIMIC4_VERSIONS, SCHEMAS, TABLE_DIRS

__all__ = [
    "BAD_ROW_KINDS",
    "BLOCK_STAYS",
    "ENDOTYPE_PRIORS",
    "FERRITIN_ITEMID",
    "DUCKDB_FILE",
    "HLA_DR_ITEMID",
    "LAYOUTS",
    "MALS_FERRITIN_NG_PER_ML",
    "MIMIC4_VERSIONS",
    "SCHEMAS",
    "SII_HLA_DR_AB_PER_CELL",
    "TABLE_DIRS",
    "SynthSummary",
    "generate_mimic4",
]
