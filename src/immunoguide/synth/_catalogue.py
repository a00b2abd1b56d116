"""What the generator draws from: protocol thresholds, endotype priors, bad-row kinds, MIMIC-IV item ids and
labels, chart texts, ICD codes, microbiology specimens / organisms / antibiotics, the prescriptions catalogue, care units.

Item ids were checked against the MIMIC-III Clinical Database Demo v1.4's MetaVision items (shared with MIMIC-IV); see
the :mod:`immunoguide.synth` docstring for which values are placeholders.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import pyarrow as pa

GENERATOR_VERSION = "1.0.0"

#: Stays per internal generation block (fixed, so output does not depend on ``chunk_stays``).
BLOCK_STAYS = 250

#: labevents itemid of ferritin (MIMIC-IV d_labitems; LOINC 2276-4; ng/mL).
FERRITIN_ITEMID = 50924
#: labevents itemid of the **synthetic** monocyte HLA-DR extension (not a MIMIC item; AB/c, QuantiBRITE).
HLA_DR_ITEMID = 990001
HLA_DR_LABEL = "Monocyte HLA-DR (QuantiBRITE)"
HLA_DR_COMMENT = (
    "SYNTHETIC ITEM (not in MIMIC-IV): monocyte HLA-DR by flow cytometry, QuantiBRITE PE-bead calibration, "
    "antibodies bound per CD45+/CD14+ monocyte (AB/c)"
)

#: ImmunoSep thresholds used to *construct* the data (immunosep-spec §2.1, confirmed; the same numbers are in
#: ``protocols/immunosep-2025.toml``, checked by a test): MALS if ferritin > 4420 ng/mL; immunoparalysis if
#: ferritin <= 4420 ng/mL and HLA-DR < 5000 AB/c.
MALS_FERRITIN_NG_PER_ML = 4420.0
SII_HLA_DR_AB_PER_CELL = 5000.0

#: Observable endotype mix among screened stays: (MALS, immunoparalysis, unclassified); the remainder is
#: indeterminate. ImmunoSep: 48/672, 228/672, 355/672 (spec §7.3 and §2.1); PROVIDE: 48/240, 103/240, 89/240 (§7.2).
ENDOTYPE_PRIORS: Mapping[str, tuple[float, float, float]] = MappingProxyType(
    {
        "immunosep": (48 / 672, 228 / 672, 355 / 672),
        "provide": (48 / 240, 103 / 240, 89 / 240),
    }
)

BAD_ROW_KINDS = ("unknown_itemid", "text_in_numeric", "implausible", "unit_mismatch", "before_intime")
_K_UNKNOWN, _K_TEXT, _K_IMPLAUSIBLE, _K_UNIT, _K_BEFORE = range(5)

ENDOTYPES = ("MALS", "immunoparalysis", "unclassified", "indeterminate")
SOURCES = ("pneumonia", "bacteremia", "urinary", "abdominal")

_NAT = np.iinfo(np.int64).min  # internal "no time" sentinel, turned into NULL on output
_H = 3600
_DAY = 86400
_ORG_RESP, _ORG_COAG, _ORG_LIVER, _ORG_CARDIO, _ORG_CNS, _ORG_RENAL = range(6)

# --------------------------------------------------------------------------------------------------------------
# Dictionaries (item ids checked against the MIMIC-III demo's MetaVision items; see module docstring)
# --------------------------------------------------------------------------------------------------------------

# chartevents: itemid -> (label, abbreviation, category, unit, param_type)
_CHART_ITEMS: dict[int, tuple[str, str, str, str | None, str]] = {
    220045: ("Heart Rate", "HR", "Routine Vital Signs", "bpm", "Numeric"),
    220050: ("Arterial Blood Pressure systolic", "ABPs", "Routine Vital Signs", "mmHg", "Numeric"),
    220051: ("Arterial Blood Pressure diastolic", "ABPd", "Routine Vital Signs", "mmHg", "Numeric"),
    220052: ("Arterial Blood Pressure mean", "ABPm", "Routine Vital Signs", "mmHg", "Numeric"),
    220179: ("Non Invasive Blood Pressure systolic", "NBPs", "Routine Vital Signs", "mmHg", "Numeric"),
    220180: ("Non Invasive Blood Pressure diastolic", "NBPd", "Routine Vital Signs", "mmHg", "Numeric"),
    220181: ("Non Invasive Blood Pressure mean", "NBPm", "Routine Vital Signs", "mmHg", "Numeric"),
    225312: ("ART BP mean", "ART BP mean", "Routine Vital Signs", "mmHg", "Numeric"),
    220210: ("Respiratory Rate", "RR", "Respiratory", "insp/min", "Numeric"),
    220277: ("O2 saturation pulseoxymetry", "SpO2", "Respiratory", "%", "Numeric"),
    223761: ("Temperature Fahrenheit", "Temperature F", "Routine Vital Signs", "°F", "Numeric"),
    223762: ("Temperature Celsius", "Temperature C", "Routine Vital Signs", "°C", "Numeric"),
    220739: ("GCS - Eye Opening", "Eye Opening", "Neurological", None, "Text"),
    223900: ("GCS - Verbal Response", "Verbal Response", "Neurological", None, "Text"),
    223901: ("GCS - Motor Response", "Motor Response", "Neurological", None, "Text"),
    223835: ("Inspired O2 Fraction", "FiO2", "Respiratory", None, "Numeric"),
    223849: ("Ventilator Mode", "Ventilator Mode", "Respiratory", None, "Text"),
    226732: ("O2 Delivery Device(s)", "O2 Delivery Device(s)", "Respiratory", None, "Text"),
    220339: ("PEEP set", "PEEP set", "Respiratory", "cmH2O", "Numeric"),
    226512: ("Admission Weight (Kg)", "Admission Weight (Kg)", "General", "kg", "Numeric"),
    220048: ("Heart Rhythm", "Heart Rhythm", "Routine Vital Signs", None, "Text"),
    220046: ("Heart rate Alarm - High", "HR Alarm - High", "Alarms", "bpm", "Numeric"),
    220047: ("Heart Rate Alarm - Low", "HR Alarm - Low", "Alarms", "bpm", "Numeric"),
    223769: ("O2 Saturation Pulseoxymetry Alarm - High", "SpO2 Alarm - High", "Alarms", "%", "Numeric"),
    223770: ("O2 Saturation Pulseoxymetry Alarm - Low", "SpO2 Alarm - Low", "Alarms", "%", "Numeric"),
    224690: ("Respiratory Rate (Total)", "Respiratory Rate (Total)", "Respiratory", "insp/min", "Numeric"),
    224685: ("Tidal Volume (observed)", "Tidal Volume (observed)", "Respiratory", "mL", "Numeric"),
    220615: ("Creatinine", "Creatinine", "Labs", "mg/dL", "Numeric"),
    227457: ("Platelet Count", "Platelet Count", "Labs", "K/uL", "Numeric with tag"),
    225690: ("Total Bilirubin", "Total Bilirubin", "Labs", "mg/dL", "Numeric"),
}
# inputevents: itemid -> (label, category, unitname)
_INPUT_ITEMS: dict[int, tuple[str, str, str]] = {
    221906: ("Norepinephrine", "Medications", "mg"),
    221289: ("Epinephrine", "Medications", "mg"),
    221662: ("Dopamine", "Medications", "mg"),
    221653: ("Dobutamine", "Medications", "mg"),
    222315: ("Vasopressin", "Medications", "units"),
    222168: ("Propofol", "Medications", "mg"),
    225158: ("NaCl 0.9%", "Fluids/Intake", "mL"),
    225798: ("Vancomycin", "Antibiotics", "dose"),
    225893: ("Piperacillin/Tazobactam (Zosyn)", "Antibiotics", "dose"),
    225855: ("Ceftriaxone", "Antibiotics", "dose"),
    225883: ("Meropenem", "Antibiotics", "dose"),
    225851: ("Cefepime", "Antibiotics", "dose"),
    225850: ("Cefazolin", "Antibiotics", "dose"),
}
_OUTPUT_ITEMS: dict[int, str] = {
    226559: "Foley",
    226560: "Void",
    226561: "Condom Cath",
    226567: "Straight Cath",
    227488: "GU Irrigant Volume In",
    227489: "GU Irrigant/Urine Volume Out",
}
_PROC_ITEMS: dict[int, str] = {225792: "Invasive Ventilation", 225794: "Non-invasive Ventilation"}

# labevents: itemid -> (label, fluid, category, unit, ref_low, ref_high, decimals)
_LAB_ITEMS: dict[int, tuple[str, str, str, str | None, float | None, float | None, int]] = {
    52033: ("Specimen Type", "Blood", "Blood Gas", None, None, None, 0),
    50821: ("pO2", "Blood", "Blood Gas", "mm Hg", 85.0, 105.0, 0),
    50818: ("pCO2", "Blood", "Blood Gas", "mm Hg", 35.0, 45.0, 0),
    50820: ("pH", "Blood", "Blood Gas", "units", 7.35, 7.45, 2),
    50816: ("Oxygen", "Blood", "Blood Gas", "%", None, None, 0),
    50813: ("Lactate", "Blood", "Blood Gas", "mmol/L", 0.5, 2.0, 1),
    51265: ("Platelet Count", "Blood", "Hematology", "K/uL", 150.0, 440.0, 0),
    51301: ("White Blood Cells", "Blood", "Hematology", "K/uL", 4.0, 11.0, 1),
    51222: ("Hemoglobin", "Blood", "Hematology", "g/dL", 13.7, 17.5, 1),
    50885: ("Bilirubin, Total", "Blood", "Chemistry", "mg/dL", 0.0, 1.5, 1),
    50912: ("Creatinine", "Blood", "Chemistry", "mg/dL", 0.5, 1.2, 1),
    51006: ("Urea Nitrogen", "Blood", "Chemistry", "mg/dL", 6.0, 20.0, 0),
    50983: ("Sodium", "Blood", "Chemistry", "mEq/L", 133.0, 145.0, 0),
    50971: ("Potassium", "Blood", "Chemistry", "mEq/L", 3.3, 5.1, 1),
    50889: ("C-Reactive Protein", "Blood", "Chemistry", "mg/L", 0.0, 5.0, 1),
    FERRITIN_ITEMID: ("Ferritin", "Blood", "Chemistry", "ng/mL", 30.0, 400.0, 0),
    HLA_DR_ITEMID: (HLA_DR_LABEL, "Blood", "Immunology (synthetic)", "AB/c", 15000.0, None, 0),
}
_UNKNOWN_CHART_ITEMIDS = np.array([999901, 999902], dtype=np.int32)
_UNKNOWN_LAB_ITEMIDS = np.array([999911, 999912], dtype=np.int32)

# Chart text values (GCS labels as charted in MetaVision; valuenum carries the score).
_GCS_EYE = ("None", "To Pain", "To Speech", "Spontaneously")  # 1..4
_GCS_VERBAL = ("No Response", "Incomprehensible sounds", "Inappropriate Words", "Confused", "Oriented")  # 1..5
_GCS_MOTOR = (
    "No response",
    "Abnormal extension",
    "Abnormal Flexion",
    "Flex-withdraws",
    "Localizes Pain",
    "Obeys Commands",
)  # 1..6
_VENT_MODES = ("CMV/ASSIST/AutoFlow", "CMV/ASSIST", "CPAP/PSV", "SIMV/PRES")
_O2_DEVICES = ("Endotracheal tube", "Bipap mask", "High flow nasal cannula", "Nasal cannula", "None")
_RHYTHMS = ("SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "SB (Sinus Bradycardia)", "AF (Atrial Fibrillation)")
_CHART_TEXTS = pa.array(
    [*_GCS_EYE, *_GCS_VERBAL, "No Response-ETT", *_GCS_MOTOR, *_VENT_MODES, *_O2_DEVICES, "ERROR", *_RHYTHMS]
)
_TX_EYE, _TX_VERBAL = 0, 4
_TX_ETT = 9
_TX_MOTOR = 10
_TX_VENT = 16
_TX_O2 = 20
_TX_ERROR = 25
_TX_RHYTHM = 26

# ICD codes: (ICD-10, ICD-9)
_ICD_SEPSIS = ("A419", "0389")
_ICD_SEVERE_SEPSIS = ("R6520", "99592")
_ICD_SEPTIC_SHOCK = ("R6521", "78552")
_ICD_SOURCE = {0: ("J189", "486"), 1: ("R7881", "7907"), 2: ("N390", "5990"), 3: ("K659", "5679")}
_ICD_NONINF = (
    ("I214", "41071"),
    ("I619", "431"),
    ("K922", "5789"),
    ("J9601", "51881"),
    ("I469", "4275"),
    ("E1010", "25013"),
)
_ICD_COMORB = (
    ("I10", "4019"),
    ("E119", "25000"),
    ("N179", "5849"),
    ("I509", "4280"),
    ("J449", "496"),
    ("N189", "5859"),
    ("I4891", "42731"),
    ("E785", "2724"),
    ("F17210", "3051"),
    ("K746", "5715"),
)

# Microbiology
_SPEC = {  # key -> (spec_itemid, spec_type_desc, test_itemid, test_name)
    "blood": (70012, "BLOOD CULTURE", 90201, "Blood Culture, Routine"),
    "sputum": (70062, "SPUTUM", 90043, "RESPIRATORY CULTURE"),
    "urine": (70079, "URINE", 90039, "URINE CULTURE"),
    "peritoneal": (70053, "PERITONEAL FLUID", 90055, "FLUID CULTURE"),
    "mrsa": (70091, "MRSA SCREEN", 90094, "MRSA SCREEN"),
}
_SPEC_KEYS = tuple(_SPEC)
_ORGS = (  # (org_itemid, org_name, susceptibility panel as ab indices into _ABS)
    (80002, "ESCHERICHIA COLI", (0, 1, 2, 3, 4, 5, 6, 7)),
    (80023, "STAPH AUREUS COAG +", (8, 9, 10, 11, 5, 12)),
    (80004, "KLEBSIELLA PNEUMONIAE", (1, 2, 3, 4, 5, 6, 7)),
    (80026, "PSEUDOMONAS AERUGINOSA", (2, 4, 5, 13, 14)),
    (80076, "STREPTOCOCCUS PNEUMONIAE", (10, 15, 16, 8)),
    (80172, "ENTEROCOCCUS FAECALIS", (0, 8, 17)),
    (80017, "PROTEUS MIRABILIS", (0, 1, 2, 5, 6)),
    (80155, "STAPHYLOCOCCUS, COAGULASE NEGATIVE", (8, 9, 11, 12)),
    (80168, "ENTEROCOCCUS FAECIUM", (0, 8, 17)),
    (80075, "YEAST", ()),
    (80293, "POSITIVE FOR METHICILLIN RESISTANT STAPH AUREUS", ()),
)
_ABS = (  # (ab_itemid, ab_name)
    (90004, "AMPICILLIN"),
    (90018, "CEFTRIAXONE"),
    (90028, "CEFEPIME"),
    (90026, "PIPERACILLIN/TAZO"),
    (90029, "MEROPENEM"),
    (90019, "CIPROFLOXACIN"),
    (90008, "TRIMETHOPRIM/SULFA"),
    (90012, "GENTAMICIN"),
    (90015, "VANCOMYCIN"),
    (90016, "OXACILLIN"),
    (90006, "ERYTHROMYCIN"),
    (90011, "TETRACYCLINE"),
    (90025, "LEVOFLOXACIN"),
    (90017, "CEFTAZIDIME"),
    (90013, "TOBRAMYCIN"),
    (90002, "PENICILLIN"),
    (90007, "CLINDAMYCIN"),
    (90010, "NITROFURANTOIN"),
)
# organism choice per source (indices into _ORGS, probabilities)
_ORG_BY_SOURCE = {
    0: ((1, 4, 3, 2, 0), (0.3, 0.25, 0.2, 0.15, 0.1)),
    1: ((0, 1, 2, 5, 7), (0.35, 0.3, 0.15, 0.12, 0.08)),
    2: ((0, 2, 6, 5), (0.55, 0.2, 0.15, 0.1)),
    3: ((0, 2, 8, 9), (0.45, 0.25, 0.15, 0.15)),
}

# Prescriptions catalogue: (drug, drug_type, formulary_drug_cd, prod_strength, dose_val_rx, dose_unit_rx,
#                          form_val_disp, form_unit_disp, doses_per_24_hrs, route, inputevents itemid or 0)
_DRUGS = (
    ("Vancomycin", "MAIN", "SYN-VANC1", "1g Frozen Bag", "1000", "mg", "1", "BAG", 2.0, "IV", 225798),
    ("Piperacillin-Tazobactam", "MAIN", "SYN-PIPT4", "4.5 g Vial", "4.5", "g", "1", "VIAL", 3.0, "IV", 225893),
    ("Ceftriaxone", "MAIN", "SYN-CEFX1", "1g Vial", "1", "g", "1", "VIAL", 1.0, "IV", 225855),
    ("Meropenem", "MAIN", "SYN-MERO1", "1g Vial", "1", "g", "1", "VIAL", 3.0, "IV", 225883),
    ("CefePIME", "MAIN", "SYN-CEFE2", "2g Vial", "2", "g", "1", "VIAL", 2.0, "IV", 225851),
    ("MetroNIDAZOLE", "MAIN", "SYN-METR5", "500 mg Tab", "500", "mg", "1", "TAB", 3.0, "PO", 0),
    ("Azithromycin", "MAIN", "SYN-AZIT5", "500 mg Vial", "500", "mg", "1", "VIAL", 1.0, "IV", 0),
    ("CeFAZolin", "MAIN", "SYN-CEFA2", "2 g Vial", "2", "g", "1", "VIAL", 3.0, "IV", 225850),
    ("Levofloxacin", "MAIN", "SYN-LEVO7", "750 mg Tab", "750", "mg", "1", "TAB", 1.0, "PO", 0),
    ("Bacitracin Ointment", "MAIN", "SYN-BACI1", "1 g Packet", "1", "Appl", "1", "PKT", 2.0, "TP", 0),
    ("Erythromycin 0.5% Ophth Oint", "MAIN", "SYN-ERYO1", "3.5g Tube", "0.5", "in", "0.1", "TUBE", 4.0, "BOTH EYES", 0),
    ("Iso-Osmotic Dextrose", "BASE", "SYN-ISOD2", "200 mL Bag", "200", "mL", "1", "BAG", 2.0, "IV", 0),
    ("Heparin", "MAIN", "SYN-HEPA5", "5000 Units / mL- 1mL Vial", "5000", "UNIT", "1", "mL", 3.0, "SC", 0),
    ("Pantoprazole", "MAIN", "SYN-PANT4", "40 mg Vial", "40", "mg", "1", "VIAL", 1.0, "IV", 0),
    ("Acetaminophen", "MAIN", "SYN-ACET3", "325 mg Tab", "650", "mg", "2", "TAB", 4.0, "PO", 0),
    ("Insulin", "MAIN", "SYN-INSU1", "100 Units / mL - 10 mL Vial", "0", "UNIT", "0", "VIAL", 4.0, "SC", 0),
    ("Docusate Sodium", "MAIN", "SYN-DOCU1", "100 mg Cap", "100", "mg", "1", "CAP", 2.0, "PO", 0),
    ("Senna", "MAIN", "SYN-SENN8", "8.6 mg Tab", "8.6", "mg", "1", "TAB", 2.0, "PO/NG", 0),
    ("Potassium Chloride", "MAIN", "SYN-KCL20", "20 mEq Tab", "40", "mEq", "2", "TAB", 1.0, "PO", 0),
    ("Furosemide", "MAIN", "SYN-FURO2", "20 mg/2 mL Vial", "20", "mg", "1", "VIAL", 2.0, "IV", 0),
    ("Metoprolol Tartrate", "MAIN", "SYN-METO2", "25 mg Tab", "12.5", "mg", "0.5", "TAB", 2.0, "PO", 0),
    ("Ondansetron", "MAIN", "SYN-ONDA4", "2 mg/mL-2mL", "4", "mg", "2", "mL", 4.0, "IV", 0),
    ("Sodium Chloride 0.9%  Flush", "MAIN", "SYN-NACF1", "10 mL Syringe", "3", "mL", "0.3", "SYR", 3.0, "IV", 0),
    ("0.9% Sodium Chloride", "BASE", "SYN-NS100", "100 mL Bag", "100", "mL", "1", "BAG", 3.0, "IV", 0),
)
_D_VANC, _D_PIPT, _D_CEFX, _D_MERO, _D_CEFE, _D_METR, _D_AZIT, _D_CEFA, _D_LEVO, _D_BACI, _D_ERYO, _D_ISOD = range(12)
_ROUTINE_DRUGS = np.arange(12, len(_DRUGS))
# empiric regimens per source (rows of up to two drugs; -1 = none) and their probabilities
_REGIMENS = {
    0: (((_D_VANC, _D_PIPT), (_D_CEFX, _D_AZIT), (_D_VANC, _D_MERO), (_D_LEVO, -1)), (0.45, 0.3, 0.15, 0.1)),
    1: (((_D_VANC, _D_CEFE), (_D_VANC, _D_PIPT), (_D_VANC, _D_MERO)), (0.45, 0.4, 0.15)),
    2: (((_D_CEFX, -1), (_D_PIPT, -1), (_D_MERO, -1), (_D_CEFE, -1)), (0.5, 0.25, 0.1, 0.15)),
    3: (((_D_PIPT, -1), (_D_CEFX, _D_METR), (_D_MERO, -1), (_D_VANC, _D_PIPT)), (0.45, 0.3, 0.1, 0.15)),
}

_CAREUNITS = (
    "Medical Intensive Care Unit (MICU)",
    "Surgical Intensive Care Unit (SICU)",
    "Medical/Surgical Intensive Care Unit (MICU/SICU)",
    "Cardiac Vascular Intensive Care Unit (CVICU)",
    "Coronary Care Unit (CCU)",
    "Trauma SICU (TSICU)",
    "Neuro Surgical Intensive Care Unit (Neuro SICU)",
)
_ANCHOR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
#: Placeholder provider ids (order_provider_id, admit_provider_id).
_PROVIDERS = pa.array([f"P{i:05X}" for i in range(1, 1201)])
