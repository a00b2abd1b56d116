"""FHIR R4B Bundles (EHR extracts) → the timeline schema (:mod:`immunoguide.cohort.schema`).

Input: a JSON file holding one Bundle (or one resource), a directory of ``*.json`` / ``*.ndjson`` files, an NDJSON
file (one resource or Bundle per line), or in-memory Bundles (dicts or ``fhir.resources.R4B`` models). Nested Bundles
are opened. Every resource is validated on its own with ``fhir.resources.R4B`` (FHIR 4.3.0; the library's default is
R5), so one bad resource never hides the others. The library does not check code value sets; every code the adapter
acts on is listed in ``fhir_codes.toml`` (with its source) and checked here.

Mapping (codes in ``fhir_codes.toml``):

* ``Encounter`` of class IMP / ACUTE / ICU → ``stays`` (period → intime/outtime). An accepted encounter that other
  accepted encounters are ``partOf`` is the hospital admission (``hadm_id``, ``admittime``), not a stay.
  ``hospitalization.admitSource`` 'emd' → ``emergency_department``, another admit source → ``inpatient``, none →
  NULL (unknown, never guessed). ``Patient``: ``birthDate`` + stay start → ``age_years``; ``gender`` → ``sex``
  (FHIR administrative gender; 'unknown' → NULL); ``deceasedDateTime`` inside the admission (or discharge
  disposition 'exp') → ``deathtime``; the first body weight of the stay → ``weight_kg``.
* ``Observation`` by LOINC (ferritin 2276-4, platelets, bilirubin, creatinine, PaO2, FiO2, MAP, GCS, urine output,
  potassium, pH, bicarbonate, body weight) or by the local concept system (``hla_dr_per_monocyte`` and every concept
  of ``criteria/concepts.toml``; assay method from ``Observation.method``) → ``observations``, converted once to the
  concept's canonical unit with :func:`immunoguide.units.to_canonical`. A Quantity with a comparator (``>2000``) or
  a censored ``valueString`` keeps its text in ``value_text`` with ``value`` NULL. Blood culture 600-7 →
  ``cultures`` (positive from the coded result or the interpretation; NULL while pending).
* ``MedicationAdministration``: RxNorm / name vasopressors (effectivePeriod + ``dosage.rateQuantity`` or
  ``rateRatio``) → ``infusions`` in µg/kg/min (per-minute rates without kg divided by the stay weight);
  antibiotics (RxNorm / name list) → ``antibiotics`` (name = the coding display or text, as charted) with
  ``dosage.route``; topical / ophthalmic / otic routes are reported, not loaded.
* ``Procedure`` (SNOMED CT) → ``ventilation`` (performedPeriod); ``Condition`` ICD-10 / ICD-9-CM → ``diagnoses``.

Named choices (also in :attr:`FhirReport.choices`):

* a resource attaches to the stay its encounter reference names; without one (or when it names an encounter that
  is not a stay), to every stay of its subject whose window ``[intime − 24 h, outtime]`` contains its time — the
  MIMIC-III adapter's rule;
* FHIR date-times carry an offset: they are converted to UTC and stored naive; date-only values are placed at 12:00
  (``time_is_date_only`` for antibiotics and cultures, a ``date_only_time`` data-quality row otherwise);
* stay ids: a numeric ``Encounter.id`` is used as is, any other id becomes a deterministic 63-bit hash of
  ``"Encounter/<id>"`` (:func:`stable_id`), recorded in :attr:`FhirReport.id_map` (same for patients, admissions);
* preliminary results are used; ICD codes are written without the dot (J18.9 → ``J189``).

Nothing is dropped silently: every resource (or component) the adapter cannot use is a ``data_quality`` row (source
``fhir:<ResourceType>/<id>``, item = the code or field, issue such as ``unknown_code``, ``unit_mismatch``,
``text_in_numeric_field``, ``implausible_value``, ``times_out_of_order``, ``no_encounter``, ``invalid_resource``)
and an entry of :attr:`FhirReport.issues`; stays without observations are reported too. Only input that is not
JSON or not FHIR at all raises :class:`~immunoguide.errors.InputError`; nothing is written then.

Modules (private; the public names are re-exported here)::

    _read      files, NDJSON, in-memory Bundles → validated R4B models, one resource at a time
    _mapping   resources → timeline rows and data-quality issues (the rules above)
    _values    date-times, codings and numbers of validated models
    _write     the rows in a total order → one Parquet file per timeline table
    _codes     fhir_codes.toml, resource types, stable ids
    _report    FhirReport, FhirIssue
    _convert   convert_fhir: read, map, write, report

>>> import tempfile
>>> bundle = {"resourceType": "Bundle", "type": "collection", "entry": [
...     {"resource": {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1960-05-01"}},
...     {"resource": {"resourceType": "Encounter", "id": "17", "status": "finished", "class": {"code": "ICU"},
...                   "subject": {"reference": "Patient/p1"},
...                   "period": {"start": "2024-01-01T08:00:00Z", "end": "2024-01-03T08:00:00Z"}}},
...     {"resource": {"resourceType": "Observation", "id": "f1", "status": "final",
...                   "code": {"coding": [{"system": "http://loinc.org", "code": "2276-4"}]},
...                   "encounter": {"reference": "Encounter/17"}, "effectiveDateTime": "2024-01-01T10:00:00Z",
...                   "valueQuantity": {"value": 4494, "unit": "pmol/L"}}}]}
>>> with tempfile.TemporaryDirectory() as d:
...     report = convert_fhir(bundle, d)
>>> report.rows["stays"], report.rows["observations"], report.issues
(1, 1, ())
"""

from immunoguide.cohort.sources.fhir._codes import load_codes, stable_id
from immunoguide.cohort.sources.fhir._convert import convert_fhir
from immunoguide.cohort.sources.fhir._report import FhirIssue, FhirReport

__all__ = ["FhirIssue", "FhirReport", "convert_fhir", "load_codes", "stable_id"]
