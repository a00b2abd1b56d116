"""The trial's statistical report: HTML and PDF with CONSORT, tables, forest plot, survival and SOFA curves.

:func:`build_report` reads the trial **only through the trial's read layer** — :func:`immunoguide.trial.export_trial`
(run here for a store, or an export directory written by it) — so blinding is the trial's, not the report's:

* the **blinded report** (``blinded=True``; roles allowed to export: statistician, dsmb, administrator) pools the
  arms. A blinded export holds no arm at all, so there is nothing to code as "A"/"B"; arm and kit-content columns
  are dropped on load even when the actor could see them. Tables are pooled overall and by immune stratum (the
  stratum is the endotype, visible to everyone); no per-arm safety signal is computed.
* the **unblinded DSMB report** (``blinded=False``) needs a role that sees arms (:func:`~immunoguide.trial.access.
  sees_arms`: dsmb); anyone else gets :class:`~immunoguide.errors.NotAuthorized`. Groups are precision
  immunotherapy (arm role ``active``) vs placebo, overall and within each stratum.

Endpoints come from :mod:`immunoguide.analysis.endpoints` (SAP rules, every day value traceable to its stored
``followups`` row, imputed days flagged ``locf`` / ``death_24``) and the statistics from
:mod:`immunoguide.analysis.estimators` (Newcombe risk difference, Woolf OR, Fisher P, proportional odds,
Kaplan–Meier and log-rank, subgroup interactions). The report lists every protocol setting (with its confidence
and warning), every SAP policy and every choice the report itself makes (:data:`REPORT_POLICIES`).

Files written to ``out_dir`` (``_dsmb`` in the names of the unblinded report's files): ``report.html`` (self-contained:
figures embedded as SVG) and the PDF of the same name (WeasyPrint), ``figures/*.svg|png`` (matplotlib, Agg),
``traceability.csv`` (every day value of the SOFA endpoints with its flag and source row), ``patients.csv`` (per
patient: death, last contact, day-15 infection, reversal draws and adverse events, each with its source rows) and
``report_summary.json`` (the numbers of :attr:`ReportResult.summary`).

:func:`build_reports` writes several reports of one trial (the demo's blinded and DSMB report) with the files of
as many :func:`build_report` calls, byte for byte: it reads each in this process and writes all but the last in
forked processes, so that two reports on two cores take about the time of the longer one.

Modules: the analysis dataset (load, blind, derive) is :mod:`immunoguide.analysis.dataset`, shared with the CDISC
export; the report's own choices are :mod:`immunoguide.analysis.report_policies`; here :mod:`.tables` (rows for the
template: endpoints, Table 1, safety, CONSORT counts, forest rows, settings, summary), :mod:`.figures` (matplotlib),
:mod:`.render` (HTML, PDF and CSV files) and :mod:`.fmt` (number formats and labels).

Examples
--------
>>> [p.name for p in REPORT_POLICIES][:2]
['study_day_numbering', 'screen_failure_reason']
>>> resolve_report_policies({"blinded_groups": "pooled"})["blinded_groups"].option
'pooled'
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from immunoguide.analysis.dataset import GROUP_LABEL, GROUPS, AnalysisData, blind, derive, open_source
from immunoguide.analysis.estimators import logrank
from immunoguide.analysis.report.figures import _consort_figure, _forest_figure, _km_figure, _sofa_traj
from immunoguide.analysis.report.fmt import _arm_short, _criterion_label
from immunoguide.analysis.report.render import (
    _data_uri,
    _render,
    _weasyprint,
    _write_patient_csv,
    _write_pdf,
    _write_trace_csv,
)
from immunoguide.analysis.report.tables import (
    _columns,
    _endpoint_table,
    _flow,
    _flow_totals,
    _forest_rows,
    _infection,
    _mean_sofa_row,
    _primary_reasons,
    _safety,
    _settings,
    _stratum_table,
    _summary,
    _table1,
    _table1_columns,
    _trace_rows,
)
from immunoguide.analysis.report_policies import REPORT_POLICIES, ReportPolicy, resolve_report_policies
from immunoguide.analysis.sap import Sap, load_sap
from immunoguide.errors import ImmunoguideError, InputError, NotAuthorized
from immunoguide.protocols import Protocol, describe_regimen, load_protocol
from immunoguide.trial.access import Actor, authorize, sees_arms

__all__ = ["REPORT_POLICIES", "GROUPS", "ReportPolicy", "ReportRequest", "ReportResult", "build_report", "build_reports",
           "resolve_report_policies"]


@dataclass(frozen=True)
class ReportResult:
    """What :func:`build_report` wrote, and the headline numbers.

    ``summary`` holds screened, screen failures, randomised (per stratum; per arm and group when unblinded),
    withdrawals with data removal, analysed, and the primary endpoint (responders and n per group — or pooled —
    with, when unblinded, the Newcombe risk difference and CI, the Woolf OR and CI and the Fisher P).
    """

    html_path: Path
    pdf_path: Path
    blinded: bool
    #: figure name → SVG file (embedded in the HTML and PDF); ``<name>_png`` → the PNG of the same figure
    figures: Mapping[str, Path]
    summary: Mapping[str, Any]
    pdf_pages: int
    traceability_csv: Path


# ------------------------------------------------------------------------------------------------------------------
# the report
# ------------------------------------------------------------------------------------------------------------------
def _authorize(actor: Actor, blinded: bool) -> None:
    if not isinstance(actor, Actor):
        raise NotAuthorized(expected="an Actor (user and trial role)", got=type(actor).__name__, where="report",
                            todo="give --user and --role")
    authorize(actor, "export")
    if not blinded and not sees_arms(actor):
        raise NotAuthorized(
            expected="a role that sees arms (dsmb) for the unblinded DSMB report",
            got=actor.describe(), where="permission unblinded report",
            todo="the unblinded report is for the DSMB only; run the blinded report (`immunoguide report`)",
        )


def build_report(
    store_or_export: Any,
    out_dir: str | Path,
    *,
    blinded: bool,
    actor: Actor,
    protocol: str | Protocol = "immunosep-2025",
    now: datetime | None = None,
    sap: Sap | None = None,
    trace_rows_in_pdf: int = 40,
    policies: Mapping[str, str] | None = None,
    signal_rule: str | None = None,
    generated_at: datetime | None = None,
) -> ReportResult:
    """Write the statistical report (HTML and PDF, figures, traceability CSV, summary JSON) to ``out_dir``.

    Parameters
    ----------
    store_or_export : TrialStore, database URL (str with ``://``) or path
        The trial store (read through :func:`immunoguide.trial.export_trial` as ``actor``), or a directory written
        by ``immunoguide trial export``.
    out_dir : path
        Output folder (created).
    blinded : bool
        True: arms pooled (roles statistician, dsmb, administrator). False: the unblinded DSMB report (dsmb).
    actor : Actor
        Who runs the report; checked by the trial's access layer.
    protocol : str or Protocol
        Protocol id (``"immunosep-2025"``, optionally ``@version``).
    now : datetime, optional
        The data cut-off: the time the trial is read at (timezone-aware; default the current UTC time). A demo or
        replay store passes its own clock's time here.
    trace_rows_in_pdf : int
        Patients of the traceability appendix printed in the PDF (the HTML has all of them).
    policies : mapping, optional
        Report policy overrides, name → option (:data:`REPORT_POLICIES`, e.g. ``study_day_numbering``).
    signal_rule : str, optional
        Override the DSMB rule's method for the signals (``newcombe_rd_lower_bound`` or ``bayes_beta_binomial``).
    generated_at : datetime, optional
        When the report is generated (the stamp on every page): default the wall clock, or ``SOURCE_DATE_EPOCH``
        (reproducible builds) when that environment variable is set. Never the data's (possibly simulated) time.

    Returns
    -------
    ReportResult

    Raises
    ------
    NotAuthorized
        Role may not export, or the unblinded report by a role that does not see arms.
    InputError
        Not a store or export; an unblinded report from a blinded export; PDF rendering unavailable.
    """
    return _write(_load(store_or_export, blinded=blinded, actor=actor, protocol=protocol, now=now, sap=sap,
                        trace_rows_in_pdf=trace_rows_in_pdf, policies=policies, signal_rule=signal_rule,
                        generated_at=generated_at), out_dir)


@dataclass(frozen=True)
class ReportRequest:
    """One report of :func:`build_reports`: where it goes, blinded or not, and who runs it (as in :func:`build_report`)."""

    out_dir: str | Path
    blinded: bool
    actor: Actor


def build_reports(store_or_export: Any, requests: Sequence[ReportRequest], *, concurrent: bool = True,
                  **options: Any) -> list[ReportResult]:
    """Several reports of one trial (the demo's blinded and DSMB report), each written as :func:`build_report` writes it.

    ``options`` are the other arguments of :func:`build_report` (``now``, ``protocol``, ...), the same for every
    report. Every request is authorised before any is read. The trial is read in this process, one request after
    the other (a SQLite store serialises its sessions anyway); with ``concurrent`` and a platform that can fork,
    each report but the last is then written (derivation, figures, HTML, PDF, CSV: most of a report's time) by a
    forked process of its own while this process reads and writes the next, so two reports take little more than
    the longer one on two cores. A forked writer never touches the store: it gets the data this process read for it,
    so it reads nothing a sequential run would not, and every file is the same, byte for byte. A writer that fails
    is run again here, which raises its error as a sequential run would. Give the heaviest report (the unblinded
    one) first: it is then read first and written while the others are read.

    Returns the results in the order of ``requests``.
    """
    for r in requests:
        _authorize(r.actor, r.blinded)
    fork = concurrent and len(requests) > 1 and "fork" in multiprocessing.get_all_start_methods()
    results: list[ReportResult | None] = [None] * len(requests)
    writers: list[tuple[int, _Loaded, Any, Any]] = []
    try:
        for i, r in enumerate(requests):
            loaded = _load(store_or_export, blinded=r.blinded, actor=r.actor, **options)
            if fork and i < len(requests) - 1:
                if not writers:
                    _import_writer_libraries()
                writers.append((i, loaded, *_fork_writer(loaded, r.out_dir)))
            else:
                results[i] = _write(loaded, r.out_dir)
    finally:
        for i, _loaded, proc, conn in writers:
            try:
                results[i] = conn.recv()
            except EOFError:  # the writer died without a word
                results[i] = None
            conn.close()
            proc.join()
    for i, loaded, _proc, _conn in writers:
        if results[i] is None:
            results[i] = _write(loaded, requests[i].out_dir)
    return [r for r in results if r is not None]


def _import_writer_libraries() -> None:
    """Import what writing a report uses (matplotlib, Jinja2, WeasyPrint) before the first fork: the forked writers
    share these modules instead of each importing them again (about 1.5 s of CPU each). A PDF
    library that cannot load is left to the writers to report, as :func:`build_report` does."""
    import contextlib

    import jinja2  # noqa: F401
    import matplotlib.backends.backend_agg  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import matplotlib.patches  # noqa: F401

    with contextlib.suppress(InputError):
        _weasyprint()


def _fork_writer(loaded: _Loaded, out_dir: str | Path) -> tuple[Any, Any]:
    """Start a forked process that writes ``loaded`` to ``out_dir``; it sends back the :class:`ReportResult`, or
    None when writing failed (the caller then writes it again itself, to raise the error)."""
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def run() -> None:
        receive.close()
        try:
            result: ReportResult | None = _write(loaded, out_dir)
        except BaseException:  # reported by the parent, which writes the report again and raises there
            result = None
        try:
            send.send(result)
            send.close()
        finally:
            # Leave at once, as the writer only writes its files: multiprocessing would flush sys.stdout/stderr on
            # the way out, and a lock another thread of the parent held when it forked (the CLI's progress bar
            # redraws from a thread) is held for ever in this copy; the flush would then wait for ever, and so
            # would the parent joining it.
            os._exit(0)

    proc = ctx.Process(target=run, name=f"immunoguide report {Path(out_dir).name}", daemon=True)
    proc.start()
    send.close()
    return proc, receive


@dataclass(frozen=True)
class _Loaded:
    """A report's inputs once read and checked (:func:`_load`): everything :func:`_write` needs, the store no more."""

    data: AnalysisData
    blinded: bool
    actor: Actor
    now: datetime
    generated: datetime
    policies: Mapping[str, ReportPolicy]
    protocol: Protocol
    sap: Sap
    trace_rows_in_pdf: int


def _load(store_or_export: Any, *, blinded: bool, actor: Actor, protocol: str | Protocol = "immunosep-2025",
          now: datetime | None = None, sap: Sap | None = None, trace_rows_in_pdf: int = 40,
          policies: Mapping[str, str] | None = None, signal_rule: str | None = None,
          generated_at: datetime | None = None) -> _Loaded:
    """The checks and the reading of :func:`build_report` (authorisation, settings, the trial as ``actor`` sees it,
    blinded when the report is)."""
    _authorize(actor, blinded)
    now = now or datetime.now(UTC)
    if now.tzinfo is None:
        raise InputError(expected="a timezone-aware report time", got=now.isoformat(), where="build_report",
                         todo="give now with a UTC offset")
    generated = generated_at or _generation_time()
    pol = resolve_report_policies(policies)
    proto = protocol if isinstance(protocol, Protocol) else load_protocol(protocol)
    sap = sap or load_sap()
    unblinded = not blinded
    data = open_source(store_or_export, actor, now, unblinded=unblinded, signal_rule=signal_rule)
    if unblinded and data.manifest.get("blinded", True):
        raise InputError(expected="an unblinded export (written by a dsmb user) for the DSMB report",
                         got="a blinded export (no arms)", where=data.source,
                         todo="export as the DSMB, or run the report on the store")
    if blinded:
        blind(data)
    return _Loaded(data, blinded, actor, now, generated, pol, proto, sap, trace_rows_in_pdf)


def _write(loaded: _Loaded, out_dir: str | Path) -> ReportResult:
    """Derive, draw and write the report of ``loaded`` to ``out_dir`` (the rest of :func:`build_report`)."""
    data, blinded, actor, now, generated = loaded.data, loaded.blinded, loaded.actor, loaded.now, loaded.generated
    pol, proto, sap, trace_rows_in_pdf = loaded.policies, loaded.protocol, loaded.sap, loaded.trace_rows_in_pdf
    unblinded = not blinded
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig_dir = out / "figures"
    figures: dict[str, Path] = {}
    patients, warnings = derive(data, proto, sap, unblinded=unblinded, policies=pol)
    c = data.consort
    primary_reasons = _primary_reasons(data, proto, pol["screen_failure_reason"])
    flow = _flow(data, patients, proto, now) if "dose_administrations" not in data.missing_tables else {}
    _consort_figure(c, proto, unblinded, fig_dir, figures, primary=primary_reasons, flow=flow, patients=patients)
    cols = _columns(patients, unblinded)
    groups = ([(k, GROUP_LABEL[k], ps) for k, _, ps in cols if k != "all"] if unblinded
              else [("all", "All analysed", patients)])
    forest = None
    if unblinded:
        forest = _forest_rows(patients, sap)
        _forest_figure(forest, fig_dir, figures)
    km_stats = _km_figure(groups, fig_dir, figures)
    logrank_res: dict[str, Any] | None = None
    if unblinded and all(km_stats.get(g) for g in ("precision", "placebo")):
        try:
            lr = logrank(km_stats["precision"]["t"], km_stats["precision"]["e"], km_stats["placebo"]["t"],
                         km_stats["placebo"]["e"])
            logrank_res = {"chi2": lr.statistic, "p": lr.p_value}
        except ImmunoguideError as exc:
            logrank_res = {"reason": exc.message}
    traj = _sofa_traj(groups if unblinded else [("all", "All analysed", patients)], fig_dir, figures)

    endpoints = _endpoint_table(patients, sap, unblinded)
    summary = _summary(c, patients, endpoints, proto, sap, unblinded)
    summary["report_policies"] = {n: p.option for n, p in pol.items()}
    if primary_reasons is not None:
        summary["screen_failure_reasons_one_per_patient"] = dict(sorted(primary_reasons[0].items()))
        summary["screen_failures_with_several_reasons"] = primary_reasons[1]
    summary["consort_follow_up"] = _flow_totals(flow, patients, unblinded) if flow else None
    ctx: dict[str, Any] = {
        "blinded": blinded, "generated_at": generated.astimezone(UTC).isoformat(timespec="seconds"),
        "data_as_of": now.isoformat(timespec="seconds"), "actor": actor.describe(),
        "source": data.source, "protocol": proto, "protocol_label": proto.label, "sap": sap,
        "columns": [(k, lab) for k, lab, _ in cols], "consort": c,
        "consort_reasons": [(_criterion_label(proto, k, width=None), v)
                            for k, v in sorted((primary_reasons[0] if primary_reasons else
                                                c.get("screen_failure_reasons", {})).items())],
        "consort_reasons_once": primary_reasons is not None,
        "consort_several": primary_reasons[1] if primary_reasons else None,
        "flow_totals": _flow_totals(flow, patients, unblinded),
        "alerts": data.alerts, "turnaround": data.turnaround,
        "table1": _table1(patients, proto, unblinded), "endpoints": endpoints,
        "table1_columns": [(k, lab) for k, lab, _ in _table1_columns(patients, unblinded)],
        "strata": _stratum_table(patients, sap, unblinded), "infection": _infection(patients, sap, unblinded),
        "mean_sofa": _mean_sofa_row(patients, unblinded), "forest": forest, "km": {k: {kk: vv for kk, vv in v.items()
                                                                                       if kk not in ("t", "e")}
                                                                                   for k, v in km_stats.items()},
        "km_labels": {k: lab for k, lab, _ in groups}, "logrank": logrank_res, "trajectory": traj,
        "safety": _safety(patients, proto, unblinded), "signals": data.signals if unblinded else None,
        "settings": _settings(proto, sap, data, pol), "trace": _trace_rows(patients, unblinded),
        "trace_pdf_rows": trace_rows_in_pdf, "warnings": warnings + [f"{p.code}: {n}" for p in patients for n in p.notes],
        "summary": summary, "figures": {k: _data_uri(v) for k, v in figures.items() if not k.endswith("_png")},
        "arm_labels": {a.code: a.label for a in proto.arms} if unblinded else {},
        "active_arm_labels": [a.label for a in proto.arms if a.role == "active"] if unblinded else [],
        "arm_short": {a.code: _arm_short(proto, a.code) for a in proto.arms} if unblinded else {},
        "regimens": {rid: describe_regimen(r) for rid, r in proto.regimens.items()} if unblinded else {},
    }
    stem = "report" if blinded else "report_dsmb"
    html = _render(ctx)
    html_path, pdf_path = out / f"{stem}.html", out / f"{stem}.pdf"
    html_path.write_text(html, encoding="utf-8")
    pages = _write_pdf(html, pdf_path, out)
    trace_csv = out / ("traceability.csv" if blinded else "traceability_dsmb.csv")
    _write_trace_csv(trace_csv, patients, unblinded)
    _write_patient_csv(out / ("patients.csv" if blinded else "patients_dsmb.csv"), patients, unblinded)
    (out / f"{stem}_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    return ReportResult(html_path, pdf_path, blinded, dict(figures), summary, pages, trace_csv)


def _generation_time() -> datetime:
    """The wall-clock time of generation, or ``SOURCE_DATE_EPOCH`` (reproducible builds) when set."""
    import os

    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch:
        try:
            return datetime.fromtimestamp(int(epoch), UTC)
        except ValueError:
            raise InputError(expected="SOURCE_DATE_EPOCH as whole seconds since 1970", got=epoch,
                             where="environment", todo="unset it or give an integer") from None
    return datetime.now(UTC)
