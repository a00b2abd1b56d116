"""``immunoguide protocol show|validate|diff``: tools for people who write protocol files.

Exit codes: 0 = fine, 2 = usage error (unknown id, unreadable path), 3 = a protocol file is invalid.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Annotated

import typer

from immunoguide.cli._common import EXIT_BAD_DATA_FILE, EXIT_USAGE
from immunoguide.errors import CriteriaError, UnknownCriteriaError

if TYPE_CHECKING:  # protocols (pydantic) and rich are imported when a command runs, not when the CLI starts
    from rich.console import Console

    from immunoguide.protocols import Protocol

protocol_app = typer.Typer(
    help="Protocol files (versioned, cited trial rules): show, validate, diff.", no_args_is_help=True
)

_CONF_STYLE = {"confirmed": "green", "likely": "yellow", "unknown": "bold red"}


def _conf(c: str) -> str:
    return f"[{_CONF_STYLE.get(c, '')}]{c}[/]"


def _load(id_or_path: str) -> Protocol:
    from immunoguide.protocols import load_protocol

    try:
        return load_protocol(id_or_path)
    except UnknownCriteriaError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(EXIT_USAGE) from None
    except CriteriaError as exc:
        typer.echo(exc.message, err=True)
        raise typer.Exit(EXIT_BAD_DATA_FILE) from None


def _render(p: Protocol, console: Console) -> None:
    from rich.table import Table
    from rich.tree import Tree

    from immunoguide.protocols import describe_biomarker, describe_criterion, describe_regimen

    m = p.meta
    root = Tree(f"[bold]{p.label}[/] — {m.title}")
    info = root.add("protocol")
    for k, v in (("population", m.population), ("design", m.design), ("based on", m.based_on)):
        if v:
            info.add(f"{k}: {v}")
    if m.registry:
        info.add("registry: " + ", ".join(f"{k} {v}" for k, v in m.registry.items()))
    info.add(f"sha256: {p.sha256[:16]}…  source: {p.source}")
    console.print(root)

    st = Table(title="Settings (unknown or conflicting items; results warn when they depend on one)", show_lines=False)
    for col in ("setting", "default", "options", "confidence", "warning"):
        st.add_column(col, overflow="fold")
    for name, s in p.settings.items():
        label = f"[bold red]{name}[/]" if s.confidence == "unknown" else name
        st.add_row(label, s.default, ", ".join(s.options), _conf(s.confidence), s.warning)
    console.print(st)

    for sect in ("inclusion", "exclusion"):
        t = Table(title=f"{sect.capitalize()} criteria", show_lines=False)
        for col in ("id", "text", "rule", "confidence", "citation"):
            t.add_column(col, overflow="fold")
        for c in getattr(p, sect):
            rule = describe_criterion(c)
            if c.kind == "unknown":
                rule = f"[bold red]{rule}[/]"
            t.add_row(c.id, c.text, rule, _conf(c.confidence), c.citation)
        console.print(t)

    if p.classification is not None and p.classification_section is not None:
        tree = Tree("[bold]Classification[/] (lower precedence wins)")
        for erule in p.classification.endotypes:
            node = tree.add(f"{erule.name} — precedence {erule.precedence} — {_conf(erule.citation.confidence)}: "
                            f"{erule.citation.source}")
            for b in erule.all_of:
                node.add(f"{describe_biomarker(b)} — {_conf(b.citation.confidence)}: {b.citation.source}")
        tree.add(f"otherwise: {p.classification.otherwise} — {p.classification_section.otherwise_note}")
        tm = p.classification.timing
        tree.add(
            f"timing: anchor {tm.anchor}; before {tm.window_before_anchor_h} h; after {tm.window_after_anchor_h} h; "
            f"max result age {tm.max_result_age_h} h — {_conf(tm.citation.confidence)}"
            + (f"; settings {list(p.classification_settings)}" if p.classification_settings else "")
        )
        for rev in p.classification.reversals:
            parts = []
            if rev.relative_fall_concept:
                parts.append(f"{rev.relative_fall_concept} falls >= {(rev.relative_fall_fraction or 0) * 100:g} %")
            parts += [describe_biomarker(b) for b in rev.all_of]
            tree.add(f"reversal of {rev.endotype}: {' AND '.join(parts)} — {_conf(rev.citation.confidence)}")
        console.print(tree)

    at = Table(title="Arms and kits" + (" (double dummy)" if p.blinding and p.blinding.double_dummy else ""))
    for col in ("arm", "role", "endotypes", "kits", "confidence"):
        at.add_column(col, overflow="fold")
    for a in p.arms:
        kits = "; ".join(f"{k}: {describe_regimen(p.regimens[r])}" for k, r in a.kits.items()) or (
            f"[bold red]not captured ({', '.join(a.depends_on_settings)})[/]"
        )
        at.add_row(f"{a.code}\n{a.label}", a.role, ", ".join(a.endotypes), kits, _conf(a.confidence))
    console.print(at)
    for o in p.overlays:
        console.print(f"overlay [bold]{o.id}[/]: when {o.when.field} in {list(o.when.values)} → only "
                      f"{list(o.allowed_arms)} ({_conf(o.confidence)})")

    rt = Table(title="Regimens")
    for col in ("id", "course", "confidence", "citation", "notes"):
        rt.add_column(col, overflow="fold")
    for r in p.regimens.values():
        notes = [n for n in (r.schedule_note, r.note) if n]
        if r.renal_check:
            notes.append(f"renal check: CrCl < {r.renal_check.crcl_below_ml_per_min:g} mL/min warns "
                         f"(setting {r.renal_check.setting})")
        rt.add_row(r.id, describe_regimen(r), _conf(r.confidence), r.citation, "; ".join(notes))
    console.print(rt)

    if p.visits is not None:
        console.print(f"visit days: {list(p.visits.days)} ({_conf(p.visits.confidence)}: {p.visits.citation})")
    if p.randomisation is not None:
        rnd = p.randomisation
        ratio = ":".join(f"{k} {v}" for k, v in rnd.ratio.value.items()) if rnd.ratio else "[bold red]not captured[/]"
        seq = rnd.sequence.value if rnd.sequence else "not captured"
        console.print(f"randomisation: ratio {ratio}; sequence {seq}; settings {list(rnd.depends_on_settings)}")
    if p.endpoints:
        et = Table(title="Endpoints")
        for col in ("id", "role", "name", "definition", "confidence"):
            et.add_column(col, overflow="fold")
        for e in p.endpoints:
            et.add_row(e.id, e.role, e.name, e.definition, _conf(e.confidence))
        console.print(et)
    if p.sap:
        sp = Table(title="SAP choices")
        for col in ("choice", "value", "confidence", "citation"):
            sp.add_column(col, overflow="fold")
        for key, choice in p.sap.items():
            sp.add_row(key, str(choice.value), _conf(choice.confidence), choice.citation)
        console.print(sp)
    unknown = p.unknown_settings
    if unknown:
        console.print(f"[bold red]{len(unknown)} unknown item(s)[/] (settings): {', '.join(unknown)}")


@protocol_app.command("show")
def show(
    id_or_path: Annotated[str, typer.Argument(help="A shipped protocol id (immunosep-2025) or a .toml path")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the flat outline as JSON instead")] = False,
    width: Annotated[int, typer.Option("--width", help="Console width for the tables")] = 160,
) -> None:
    """Show a protocol: criteria with citation and confidence, settings (unknowns highlighted), arms, regimens."""
    from rich.console import Console

    from immunoguide.protocols import protocol_outline

    p = _load(id_or_path)
    if as_json:
        typer.echo(json.dumps({"protocol": p.label, "outline": protocol_outline(p)}, indent=2))
        return
    _render(p, Console(width=width, soft_wrap=False, highlight=False))


@protocol_app.command("validate")
def validate(
    paths: Annotated[list[str], typer.Argument(help="Protocol files (or shipped ids) to validate")],
) -> None:
    """Validate protocol files; exit 0 if all are valid, 3 if any is not (each error printed)."""
    from immunoguide.protocols import load_protocol

    bad = 0
    for path in paths:
        try:
            p = load_protocol(path)
        except UnknownCriteriaError as exc:
            typer.echo(f"ERROR {path}: {exc.message}", err=True)
            bad += 1
            continue
        except CriteriaError as exc:
            typer.echo(f"INVALID {path}: {exc.message}", err=True)
            bad += 1
            continue
        typer.echo(f"OK {path}: {p.label} ({len(p.criteria)} criteria, {len(p.arms)} arms, "
                   f"{len(p.unknown_settings)} unknown settings)")
    raise typer.Exit(EXIT_BAD_DATA_FILE if bad else 0)


@protocol_app.command("diff")
def diff(
    a: Annotated[str, typer.Argument(help="Old protocol (id or path)")],
    b: Annotated[str, typer.Argument(help="New protocol (id or path)")],
) -> None:
    """What changed from A to B: criteria, thresholds, settings, regimens … added (+), removed (-), changed (~)."""
    from immunoguide.protocols import diff_protocols

    pa, pb = _load(a), _load(b)
    changes = diff_protocols(pa, pb)
    typer.echo(f"{pa.label} -> {pb.label}: {len(changes)} change(s)")
    for ch in changes:
        typer.echo(str(ch))
