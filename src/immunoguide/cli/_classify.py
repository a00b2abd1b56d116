"""``immunoguide classify``: immune endotype (MALS, immunoparalysis, …) for each JSON line.

Register in :mod:`immunoguide.cli` with ``app.command("classify")(classify)``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from immunoguide.cli._common import EXIT_BAD_DATA_FILE, EXIT_USAGE, fail, run_jsonl
from immunoguide.errors import CriteriaError, UnknownCriteriaError

if TYPE_CHECKING:  # the CLI imports the rules when a command runs, not when it starts (benchmarks/bench_user.py)
    from immunoguide.protocols.model import ClassificationSpec

__all__ = ["classify", "classify_app", "load_classification", "record_handler"]


def load_classification(protocol_id: str) -> tuple[ClassificationSpec, str]:
    """The classification spec of a shipped protocol and its label (``"immunosep-2025@1.0.0"``).

    Raises :class:`~immunoguide.errors.UnknownCriteriaError` for an id that is not shipped and
    :class:`~immunoguide.errors.CriteriaError` for an invalid protocol file.
    """
    from immunoguide.protocols import load_protocol

    protocol = load_protocol(protocol_id)
    if protocol.classification is None:
        raise UnknownCriteriaError(
            expected="a protocol with a [classification] section",
            got=protocol.label,
            where="--protocol",
            todo="pick a protocol that defines endotype rules (e.g. immunosep-2025)",
        )
    return protocol.classification, protocol.label


def record_handler(spec: ClassificationSpec, protocol_label: str) -> Callable[[dict[str, Any], str], dict[str, Any]]:
    """A :func:`~immunoguide.cli._common.run_jsonl` handler: one flat record in, one classification out."""
    from immunoguide.rules.endotype import classify_endotype, pending_from_record, results_from_record

    def handle(record: dict[str, Any], where: str) -> dict[str, Any]:
        results, anchor_time, at = results_from_record(record, spec, where=where)
        pending = pending_from_record(record, spec, where=where)
        result = classify_endotype(spec, results, anchor_time=anchor_time, at=at, protocol_label=protocol_label)
        out: dict[str, Any] = {"id": record["id"]} if "id" in record else {}
        out.update(result.to_dict())
        if pending:
            out["pending"] = [p.to_dict() for p in pending]
            out["warnings"] = [*out.get("warnings", []), *(
                {"code": "result_pending", "text": f"{p.analyte} sampled at {p.sample_time.isoformat()}: result "
                 "pending, not used", "rule": None, "concept": p.concept} for p in pending)]
        return out

    return handle


def classify(
    protocol: Annotated[
        str,
        typer.Option(
            "--protocol", help="Protocol id (optionally id@version) or protocol file whose [classification] is used."
        ),
    ] = "immunosep-2025",
) -> None:
    """Classify the immune endotype for each JSON line on stdin; write one JSON line per input line on stdout.

    Input fields (absent or null = not measured): ferritin (number or censored text such as "GREATER THAN 2000",
    ">5000", "<15") with ferritin_unit (required: ng/mL, ug/L or pmol/L) or ferritin_ng_per_ml;
    hla_dr_per_monocyte (AB/c) with hla_dr_method (e.g. quantibrite_abc); optional <analyte>_sample_time,
    <analyte>_receipt_time, <analyte>_result_time, anchor_time (e.g. Sepsis-3 onset), at (classification time),
    all ISO 8601; id (echoed).

    Output: endotype (a rule name such as MALS or immunoparalysis, the protocol's fallback such as unclassified,
    or indeterminate), possible_endotypes, reasons (code + text), protocol, ages_h, turnaround_h, inputs_used,
    excluded, criteria, warnings. A bad line gets {"line": N, "error": {...}} naming the field, the other lines
    are still classified; exit code 1 then.
    """
    try:
        spec, label = load_classification(protocol)
    except UnknownCriteriaError as exc:
        fail(exc, EXIT_USAGE)
        return
    except CriteriaError as exc:
        fail(exc, EXIT_BAD_DATA_FILE)
        return
    raise typer.Exit(run_jsonl(sys.stdin, sys.stdout, record_handler(spec, label)))


#: A one-command Typer for tests and for mounting; the main app registers :func:`classify` directly.
classify_app = typer.Typer(help="Immune endotype classification over JSON lines (stdin → stdout).")
classify_app.command("classify")(classify)
