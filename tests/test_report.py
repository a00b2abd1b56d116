"""The trial's statistical report (blinded and unblinded DSMB): HTML and PDF from a small seeded trial store.

The trial is built through the trial's public workflow (:mod:`report_trial_builder`), which keeps its own record of
what it entered; endpoints recomputed from that record with the analysis functions must equal the report's numbers.
"""

from __future__ import annotations

import base64
import csv
import json
import re
import zlib
from pathlib import Path

import pytest
import typer
from markupsafe import escape
from typer.testing import CliRunner

from immunoguide.analysis import DailySofaRecord, sofa_response, two_proportions
from immunoguide.analysis.report import REPORT_POLICIES, ReportRequest, ReportResult, build_report, build_reports
from immunoguide.analysis.sap import load_sap
from immunoguide.cli._report import report, report_dsmb
from immunoguide.errors import InputError, NotAuthorized, PolicyError
from immunoguide.protocols import describe_regimen, load_protocol
from immunoguide.trial import Actor, export_trial
from immunoguide.trial.adverse_events import load_safety_rules
from report_trial_builder import DSMB, LATE, STATISTICIAN, BuiltTrial, build_trial

PROTOCOL = load_protocol("immunosep-2025")


def _esc(text: str) -> str:
    """``text`` as the report's template writes it (Jinja autoescape)."""
    return str(escape(text))
TRACE_ROWS_IN_PDF = 10


@pytest.fixture(scope="module")
def trial(tmp_path_factory: pytest.TempPathFactory) -> BuiltTrial:
    d = tmp_path_factory.mktemp("report_trial")
    built = build_trial(f"sqlite:///{d / 'trial.db'}", d / "lists")
    yield built
    built.store.dispose()


@pytest.fixture(scope="module")
def reports(trial: BuiltTrial, tmp_path_factory: pytest.TempPathFactory) -> tuple[ReportResult, ReportResult]:
    out = tmp_path_factory.mktemp("reports")
    blinded = build_report(trial.store, out / "blinded", blinded=True, actor=STATISTICIAN, now=LATE,
                           trace_rows_in_pdf=TRACE_ROWS_IN_PDF)
    dsmb = build_report(trial.store, out / "dsmb", blinded=False, actor=DSMB, now=LATE)
    return blinded, dsmb


def _pdf_pages(path: Path) -> int:
    """Pages of a PDF: pypdf if installed, else its page objects counted (object streams inflated with zlib)."""
    try:
        import pypdf

        return len(pypdf.PdfReader(str(path)).pages)
    except ImportError:
        pass
    data = path.read_bytes()
    chunks = [data]
    for m in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", data, flags=re.S):
        try:
            chunks.append(zlib.decompress(m.group(1)))
        except zlib.error:
            continue
    return sum(len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", c)) for c in chunks)


def _visible_html(text: str) -> str:
    """The report HTML without its embedded images (base64 data would match arbitrary words)."""
    return re.sub(r"data:image/[^\"']+", "", text)


def _figure_texts(text: str) -> str:
    """Text drawn in the embedded SVG figures (``<text>`` elements, and matplotlib's comments next to glyph paths)."""
    out = []
    for b64 in re.findall(r"data:image/svg\+xml;base64,([A-Za-z0-9+/=]+)", text):
        svg = base64.b64decode(b64).decode("utf-8")
        out.extend(re.findall(r"<!--(.*?)-->", svg, flags=re.S))
        out.extend(re.findall(r"<text[^>]*>(.*?)</text>", svg, flags=re.S))
    return "\n".join(out)


def _row(text: str, code: str) -> str:
    m = re.search(rf'<tr[^>]*data-patient="{code}">(.*?)</tr>', text, flags=re.S)
    assert m, f"no traceability row for {code}"
    return m.group(1)


def _expected_primary(trial: BuiltTrial) -> dict[str, tuple[int, int]]:
    """Responders / analysed per group, from what the builder entered, through the SAP endpoint function."""
    out: dict[str, list[int]] = {"precision": [0, 0], "placebo": [0, 0]}
    for e in trial.patients.values():
        if e.data_removed:
            continue
        group = "precision" if e.role == "active" else "placebo"
        out[group][1] += 1
        recs = [DailySofaRecord(e.code, d, v, e.death_day) for d, v in sorted(e.sofa.items())]
        if recs and sofa_response(recs, endpoint="d2_9").responder:
            out[group][0] += 1
    return {k: (v[0], v[1]) for k, v in out.items()}


def test_both_reports_write_html_pdf_and_figures(reports: tuple[ReportResult, ReportResult]) -> None:
    """Each report writes an HTML and a multi-page A4 PDF with every section, its figures and the trace CSV."""
    for res, sections in ((reports[0], 9), (reports[1], 9)):
        assert res.html_path.is_file() and res.pdf_path.is_file()
        assert res.pdf_path.read_bytes()[:5] == b"%PDF-"
        assert _pdf_pages(res.pdf_path) == res.pdf_pages >= 10
        text = res.html_path.read_text()
        for i in range(1, sections + 1):
            assert re.search(rf"<h2>{i}\. ", text), f"section {i} missing"
        assert res.traceability_csv.is_file()
        for name in ("consort", "km", "sofa_trajectory"):
            assert res.figures[name].stat().st_size > 1000 and res.figures[f"{name}_png"].is_file()
    assert "forest" in reports[1].figures and "forest" not in reports[0].figures


def test_blinded_report_names_no_arm_drug_or_per_arm_safety_signal(reports: tuple[ReportResult, ReportResult]) -> None:
    """The blinded report holds no arm code, arm label, kit content, group header or safety signal, in text or figures."""
    raw = reports[0].html_path.read_text()
    text, figs = _visible_html(raw), _figure_texts(raw)
    assert figs, "figure texts were not found"
    forbidden = [a.code for a in PROTOCOL.arms] + [a.label for a in PROTOCOL.arms]
    forbidden += list(PROTOCOL.regimens) + [describe_regimen(r) for r in PROTOCOL.regimens.values()]
    for sig in load_safety_rules().signals:
        forbidden += [sig.id, sig.text]
    forbidden += ["Safety signals (DSMB only)", "DSMB statistical rule", "Precision", "Log-rank"]
    for s in forbidden:
        assert _esc(s) not in text and s not in text, s
        assert s not in figs, s
    headers = " ".join(re.findall(r"<th[^>]*>(.*?)</th>", text, flags=re.S)).lower()
    for word in ("placebo", "precision", "anakinra", "ifn", "arm a", "arm b"):
        assert word not in headers, word
    settings_section = text.split("<h2>8. ")[1].split("<h2>9. ")[0]
    outside = text.replace(settings_section, "")
    for drug in ("anakinra", "IFN", "interferon"):
        assert drug.lower() not in outside.lower(), drug
    s = reports[0].summary
    assert s["blinded"] is True and s["randomised_per_arm"] is None and set(s["primary"]["responders"]) == {"all"}


def test_unblinded_report_compares_groups_with_safety_signals(reports: tuple[ReportResult, ReportResult]) -> None:
    """The DSMB report names both groups, the arms, the trial's safety signals and the DSMB's statistical rule."""
    text = _visible_html(reports[1].html_path.read_text())
    assert "UNBLINDED" in text and "Safety signals (DSMB only)" in text and "DSMB statistical rule" in text
    for sig in load_safety_rules().signals:
        assert _esc(sig.text) in text
    for a in PROTOCOL.arms:
        if a.role == "active":
            assert _esc(a.label) in text
    assert "Log-rank test, precision vs placebo" in text
    assert "Precision immunotherapy" in _figure_texts(reports[1].html_path.read_text())


def test_statistician_cannot_run_the_dsmb_report(trial: BuiltTrial, tmp_path: Path) -> None:
    """Only a role that sees arms (dsmb) gets the unblinded report; site staff get neither; nothing is written."""
    for actor in (STATISTICIAN, Actor("admin", "administrator"), Actor("dr_k", "investigator", "ATH")):
        with pytest.raises(NotAuthorized):
            build_report(trial.store, tmp_path / "x", blinded=False, actor=actor, now=LATE)
    with pytest.raises(NotAuthorized):
        build_report(trial.store, tmp_path / "x", blinded=True, actor=Actor("rivera", "site_coordinator", "ATH"),
                     now=LATE)
    assert not (tmp_path / "x").exists()


def test_summary_numbers_equal_the_analysis_functions_on_the_entered_data(
    trial: BuiltTrial, reports: tuple[ReportResult, ReportResult]
) -> None:
    """CONSORT counts and the primary endpoint (RD, Newcombe CI, Woolf OR and CI, Fisher P) match a recomputation."""
    removed = sum(e.data_removed for e in trial.patients.values())
    for res in reports:
        s = res.summary
        assert s["screened"] == trial.screened and s["screen_failures"] == trial.screen_failures
        assert s["pending"] == trial.pending and s["randomised"] == len(trial.patients)
        assert s["withdrawn_with_data_removal"] == removed == 1
        assert s["analysed"] == len(trial.patients) - removed == s["analysed_in_report"]
    exp = _expected_primary(trial)
    blinded, dsmb = reports[0].summary["primary"], reports[1].summary["primary"]
    assert blinded["responders"]["all"] == exp["precision"][0] + exp["placebo"][0]
    assert blinded["n"]["all"] == exp["precision"][1] + exp["placebo"][1]
    assert {g: (dsmb["responders"][g], dsmb["n"][g]) for g in exp} == exp
    by_arm: dict[str, int] = {}
    for e in trial.patients.values():
        by_arm[e.arm] = by_arm.get(e.arm, 0) + 1
    assert reports[1].summary["randomised_per_arm"] == by_arm
    r = two_proportions(*exp["precision"], *exp["placebo"], zero_cell_correction="haldane_if_zero")
    assert dsmb["risk_difference"] == pytest.approx(r.risk_difference.difference)
    assert dsmb["risk_difference_ci"] == pytest.approx([r.risk_difference.ci_low, r.risk_difference.ci_high])
    assert dsmb["odds_ratio"] == pytest.approx(r.odds_ratio.odds_ratio)
    assert dsmb["odds_ratio_ci"] == pytest.approx([r.odds_ratio.ci_low, r.odds_ratio.ci_high])
    assert dsmb["fisher_p"] == pytest.approx(r.fisher.p_value)
    assert json.loads((reports[1].html_path.parent / "report_dsmb_summary.json").read_text())["primary"]["fisher_p"] \
        == pytest.approx(r.fisher.p_value)


def test_imputed_days_are_marked_in_the_traceability_appendix(
    trial: BuiltTrial, reports: tuple[ReportResult, ReportResult]
) -> None:
    """A missed SOFA day shows LOCF with its source day, a day after death shows 24, measured days name their row."""
    text = reports[0].html_path.read_text()
    gap = next(e for e in trial.patients.values() if not e.data_removed and 1 in e.sofa
               and any(d not in e.sofa and (e.death_day is None or d <= e.death_day) and
                       (not e.withdrawn or d <= max(e.sofa)) for d in range(2, 10)))
    day = next(d for d in range(2, 10) if d not in gap.sofa and (gap.death_day is None or d <= gap.death_day))
    source = max(d for d in gap.sofa if d < day)
    row = _row(text, gap.code)
    cell = re.search(rf'<td class="(\w+)" data-flag="\w+" data-day="{day}"[^>]*>\s*(\d+)\s*(.*?)</td>', row, re.S)
    assert cell and cell.group(1) == "locf" and int(cell.group(2)) == gap.sofa[source]
    assert f"LOCF d{source}" in cell.group(3)
    dead = next(e for e in trial.patients.values()
                if not e.data_removed and e.death_day is not None and e.death_day < 9 and 1 in e.sofa)
    row = _row(text, dead.code)
    for d in range(dead.death_day + 1, 10):
        assert re.search(rf'<td class="death_24" data-flag="death_24" data-day="{d}"[^>]*>\s*24\s', row), d
    measured = next(d for d in range(2, 10) if d in gap.sofa)
    assert re.search(rf'data-flag="measured" data-day="{measured}" title="measured from followups/\d+', _row(text, gap.code))
    with reports[0].traceability_csv.open() as fh:
        flags = {(r["patient"], r["endpoint"], r["day"]): r["flag"] for r in csv.DictReader(fh)}
    assert flags[(gap.code, "d2_9", str(day))] == "locf"
    assert flags[(dead.code, "d2_15", "15")] == "death_24"
    with (reports[0].html_path.parent / "patients.csv").open() as fh:
        per_patient = {r["patient"]: r for r in csv.DictReader(fh)}
    assert per_patient[dead.code]["died_on_day"] == str(dead.death_day)
    assert re.fullmatch(r"followups/\d+", per_patient[dead.code]["death_row"])


def test_pdf_copy_of_the_appendix_is_truncated_with_a_note(reports: tuple[ReportResult, ReportResult]) -> None:
    """The HTML holds every patient; rows past the PDF limit are print-hidden and the printed copy says so."""
    text = reports[0].html_path.read_text()
    rows = re.findall(r'<tr class="([^"]*)" data-patient=', text)
    assert len(rows) == reports[0].summary["analysed"] > TRACE_ROWS_IN_PDF
    assert rows.count("trace-extra") == len(rows) - TRACE_ROWS_IN_PDF
    assert "Printed copy truncated" in text and "@media print" in text


def test_every_protocol_setting_and_unknown_is_listed(reports: tuple[ReportResult, ReportResult]) -> None:
    """Every protocol setting (unknowns with their warning), SAP policy and report choice appears in both reports."""
    sap = load_sap()
    assert PROTOCOL.unknown_settings
    for res in reports:
        text = res.html_path.read_text()
        for name, setting in PROTOCOL.settings.items():
            assert f"<code>{name}</code>" in text
            assert _esc(setting.warning) in text
        for name in sap.policies:
            assert f"<code>{name}</code>" in text
        for p in REPORT_POLICIES:
            assert f"<code>{p.name}</code>" in text
        assert f"({len(PROTOCOL.unknown_settings)}) carry a warning" in text


def test_report_from_an_export_folder_matches_the_store(trial: BuiltTrial, reports: tuple[ReportResult, ReportResult],
                                                         tmp_path: Path) -> None:
    """A blinded export gives the same blinded numbers as the store, and cannot give an unblinded report."""
    with trial.store.session() as s:
        export_trial(s, tmp_path / "export", actor=STATISTICIAN, now=LATE, formats=("csv",))
    with pytest.raises(InputError):
        build_report(tmp_path / "export", tmp_path / "dsmb", blinded=False, actor=DSMB, now=LATE)
    res = build_report(tmp_path / "export", tmp_path / "out", blinded=True, actor=STATISTICIAN, now=LATE)
    assert res.summary == reports[0].summary


def test_cli_report_commands_write_or_refuse_by_role(trial: BuiltTrial, tmp_path: Path) -> None:
    """`report` runs for a statistician; `report-dsmb` refuses a statistician with exit 4 and IG-E408."""
    app = typer.Typer()
    app.command("report")(report)
    app.command("report-dsmb")(report_dsmb)
    runner = CliRunner()
    url = trial.store.url
    common = ["--db", url, "--user", "stat", "--now", LATE.isoformat()]
    refused = runner.invoke(app, ["report-dsmb", *common, "--role", "statistician", "--out", str(tmp_path / "d")])
    assert refused.exit_code == 4
    assert json.loads(refused.stderr.strip().splitlines()[-1])["error"]["code"] == "IG-E408"
    ok = runner.invoke(app, ["report", *common, "--role", "statistician", "--out", str(tmp_path / "b"),
                             "--trace-rows", "5"])
    assert ok.exit_code == 0, ok.stderr
    doc = json.loads(ok.stdout)
    assert Path(doc["pdf"]).is_file() and doc["blinded"] is True and doc["summary"]["randomised"] == len(trial.patients)


# ---------------------------------------------------------------------------------------------------------------
# issue 15: SAP day mapping, report policies, CONSORT boxes, Table 1, the generated stamp


def test_sap_day_1_is_the_randomisation_day_and_the_old_mapping_is_a_named_option(
    trial: BuiltTrial, reports: tuple[ReportResult, ReportResult], tmp_path: Path
) -> None:
    """By default the SAP baseline (day 1) is follow-up day 0 (the randomisation day); the former mapping is the
    option followup_day_is_sap_day and gives other baselines; both are named in the summary and section 8.6."""
    assert reports[0].summary["report_policies"]["study_day_numbering"] == "randomisation_day_is_sap_day_1"
    old = build_report(trial.store, tmp_path / "old", blinded=True, actor=STATISTICIAN, now=LATE,
                       policies={"study_day_numbering": "followup_day_is_sap_day"})
    assert old.summary["report_policies"]["study_day_numbering"] == "followup_day_is_sap_day"
    assert old.summary["primary"] != reports[0].summary["primary"]
    assert "(chosen)" in old.html_path.read_text() and "(chosen)" not in reports[0].html_path.read_text()
    with pytest.raises(PolicyError):
        build_report(trial.store, tmp_path / "bad", blinded=True, actor=STATISTICIAN, now=LATE,
                     policies={"study_day_numbering": "whatever"})


def test_report_policies_are_settable_from_the_cli(trial: BuiltTrial, tmp_path: Path) -> None:
    """`immunoguide report --policy study_day_numbering=followup_day_is_sap_day` is used; an unknown one exits 2."""
    app = typer.Typer()
    app.command("report")(report)
    app.command("report-dsmb")(report_dsmb)
    common = ["--db", trial.store.url, "--user", "stat", "--role", "statistician", "--now", LATE.isoformat()]
    ok = CliRunner().invoke(app, ["report", *common, "--out", str(tmp_path / "b"), "--policy",
                                  "study_day_numbering=followup_day_is_sap_day"])
    assert ok.exit_code == 0, ok.stderr
    assert json.loads(ok.stdout)["summary"]["report_policies"]["study_day_numbering"] == "followup_day_is_sap_day"
    bad = CliRunner().invoke(app, ["report", *common, "--out", str(tmp_path / "c"), "--policy", "nope=1"])
    assert bad.exit_code == 2 and json.loads(bad.stderr.strip().splitlines()[-1])["error"]["code"] == "IG-E300"


def test_consort_counts_each_screen_failure_once_with_full_labels_and_follow_up_boxes(
    reports: tuple[ReportResult, ReportResult]
) -> None:
    """Screen-failure reasons add up to the screen failures (a refused consent is E2, not also I3); labels are not
    cut; the flow has received / did not receive the intervention, lost to follow-up and discontinued boxes."""
    s = reports[0].summary
    once = s["screen_failure_reasons_one_per_patient"]
    assert sum(once.values()) == s["screen_failures"] and "I3" not in once
    for res in reports:
        svg = res.figures["consort"].read_text()
        for box in ("Received allocated intervention", "Did not receive it", "Lost to follow-up",
                    "Discontinued intervention"):
            assert box in svg, box
        assert "…" not in svg
    flow = s["consort_follow_up"]
    assert sum(r["n"] for r in flow) == s["analysed"] and all(r["received"] == r["n"] for r in flow)
    assert sum(r["lost"] for r in flow) >= 1  # the builder's patient without a day-90 visit


def test_table_1_has_site_apache_charlson_and_ventilation_from_screening(reports: tuple[ReportResult, ReportResult]) -> None:
    """Site, APACHE II, Charlson and mechanical ventilation come from the screening record (not 'not collected'), so
    the SAP subgroups APACHE II >= 25 and CCI >= 5 have patients in the DSMB forest plot."""
    text = _visible_html(reports[0].html_path.read_text())
    for label in ("Site", "APACHE II, median [IQR]", "Charlson comorbidity index, median [IQR]",
                  "Mechanical ventilation at screening"):
        assert label in text, label
    table1 = text.split("<h2>2. ")[1].split("</table>")[0]
    assert "not collected" not in table1
    dsmb = reports[1].html_path.read_text()
    forest = dsmb.split("<h2>4. ")[1].split("<h2>5. ")[0]
    assert "APACHE II ≥ 25" in forest and "Charlson index ≥ 5" in forest
    assert '<td colspan="4" class="muted">not collected</td>' not in forest


def test_generated_stamp_is_the_wall_clock_not_the_data_time(trial: BuiltTrial, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The page stamp is when the report was generated (or SOURCE_DATE_EPOCH); the data cut-off is shown apart."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # 2026-01-01T00:00:00Z
    res = build_report(trial.store, tmp_path / "r", blinded=True, actor=STATISTICIAN, now=LATE)
    html = res.html_path.read_text()
    assert 'content: "generated 2026-01-01T00:00:00+00:00"' in html
    assert f"<td>Data as of</td><td>{LATE.isoformat(timespec='seconds')}" in html


def _files(d: Path) -> dict[str, bytes]:
    return {p.relative_to(d).as_posix(): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def test_reports_written_by_forked_processes_are_those_of_build_report_byte_for_byte(
    trial: BuiltTrial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """build_reports (the demo's two reports, the first written by a forked process) writes the files of two
    build_report calls, byte for byte, and returns their results in the order asked."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    requests = [ReportRequest(tmp_path / "together" / "dsmb", False, DSMB),
                ReportRequest(tmp_path / "together" / "blinded", True, STATISTICIAN)]
    dsmb, blinded = build_reports(trial.store, requests, now=LATE)
    assert (dsmb.blinded, blinded.blinded) == (False, True)
    for r in requests:
        alone = tmp_path / "alone" / Path(r.out_dir).name
        res = build_report(trial.store, alone, blinded=r.blinded, actor=r.actor, now=LATE)
        assert _files(alone) == _files(Path(r.out_dir))
        assert res.summary == (blinded if r.blinded else dsmb).summary


def test_build_reports_authorises_every_report_before_reading_and_raises_a_writers_error(
    trial: BuiltTrial, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No report is read or written when one of the requests is not allowed; a forked writer's failure is raised
    here, as the same error a sequential run raises."""
    with pytest.raises(NotAuthorized):
        build_reports(trial.store, [ReportRequest(tmp_path / "a", True, STATISTICIAN),
                                    ReportRequest(tmp_path / "b", False, STATISTICIAN)], now=LATE)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()

    import immunoguide.analysis.report as report_module

    def no_pdf(html: str, pdf_path: Path, base: Path) -> int:
        if "dsmb" in pdf_path.name:
            raise InputError(expected="PDF rendering", got="a test failure", where="PDF rendering", todo="none")
        return 1

    monkeypatch.setattr(report_module, "_write_pdf", no_pdf)
    with pytest.raises(InputError, match="a test failure"):
        build_reports(trial.store, [ReportRequest(tmp_path / "c", False, DSMB),
                                    ReportRequest(tmp_path / "d", True, STATISTICIAN)], now=LATE)
