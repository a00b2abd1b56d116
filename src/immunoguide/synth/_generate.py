"""The public entry point :func:`generate_mimic4` and its result :class:`SynthSummary`."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from immunoguide.synth._block import _generate_block
from immunoguide.synth._catalogue import BAD_ROW_KINDS, BLOCK_STAYS, ENDOTYPES, GENERATOR_VERSION
from immunoguide.synth._model import _make_cfg
from immunoguide.synth._tables import EVENT_TABLES, TABLE_DIRS, _d_items, _d_labitems, _schemas_for
from immunoguide.synth._writers import _prepare_out_dir, _relayout, _Sink

# --------------------------------------------------------------------------------------------------------------
# Public result
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SynthSummary:
    """What :func:`generate_mimic4` wrote.

    Attributes
    ----------
    out_dir : Path
        Output directory.
    stays, seed, chunk_stays, chunks : int
        Number of ICU stays, random seed, stays per file and number of files per chunked table.
    rows : Mapping[str, int]
        Rows written per table (``"chartevents"``, ``"labevents"`` …, ``"_truth/stays"``, ``"_truth/bad_rows"``).
    bad_rows : Mapping[str, int]
        Injected bad rows per kind (:data:`BAD_ROW_KINDS`).
    endotypes_observable : Mapping[str, int]
        Screened stays per observable endotype (MALS, immunoparalysis, unclassified, indeterminate).
    seconds : float
        Wall-clock time of the run, s.
    settings : Mapping[str, Any]
        The generator settings (rates, prior, limits) as used.
    """

    out_dir: Path
    stays: int
    seed: int
    chunk_stays: int
    chunks: int
    rows: Mapping[str, int]
    bad_rows: Mapping[str, int]
    endotypes_observable: Mapping[str, int]
    seconds: float
    settings: Mapping[str, Any] = field(default_factory=dict)

    @property
    def events(self) -> int:
        """Rows in the event tables (chart, lab, input, output, procedure, microbiology, prescriptions)."""
        return sum(self.rows.get(t, 0) for t in EVENT_TABLES)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record (written to ``_truth/summary.json``)."""
        return {
            # the generator's name as it was when GENERATOR_VERSION 1.0.0 was set (kept: same seed, same bytes)
            "generator": f"immunoguide.cohort.synth/{GENERATOR_VERSION}",
            "out_dir": str(self.out_dir),
            "stays": self.stays,
            "seed": self.seed,
            "chunk_stays": self.chunk_stays,
            "chunks": self.chunks,
            "rows": dict(self.rows),
            "events": self.events,
            "bad_rows": dict(self.bad_rows),
            "endotypes_observable": dict(self.endotypes_observable),
            "seconds": round(self.seconds, 3),
            "settings": dict(self.settings),
        }


# --------------------------------------------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------------------------------------------


def generate_mimic4(
    out_dir: str | Path,
    *,
    stays: int,
    seed: int,
    chunk_stays: int = 5000,
    bad_row_rate: float = 0.002,
    censored_ferritin_rate: float = 0.2,
    ferritin_report_limit_ng_per_ml: float = 2000.0,
    infected_fraction: float = 0.55,
    endotype_prior: Literal["immunosep", "provide"] = "immunosep",
    overwrite: bool = False,
    progress: Callable[[int, int], None] | None = None,
    layout: Literal["parquet-parts", "physionet-csv", "physionet-parquet", "duckdb"] = "parquet-parts",
    mimic_version: Literal["2.0", "2.2", "3.1"] = "2.2",
) -> SynthSummary:
    """Write ``stays`` synthetic ICU stays as MIMIC-IV tables under ``out_dir``, in one of :data:`LAYOUTS`.

    Parameters
    ----------
    out_dir : str or Path
        Output directory; created if needed. It must not already contain generator output unless ``overwrite``.
    stays : int
        Number of ICU stays (1 … 9,999,999). About 1,000 event rows per stay on average.
    seed : int
        Random seed (>= 0). Same seed → same content; see the module docstring for chunk-size independence.
    chunk_stays : int
        Stays per Parquet file (one file per chunk per table: ``part-00000.parquet`` …).
    bad_row_rate : float
        Probability in [0, 0.5] that an eligible event row (chart, lab, input, output) is made bad.
    censored_ferritin_rate : float
        Probability in [0, 1] that a ferritin result above ``ferritin_report_limit_ng_per_ml`` is reported censored
        (``"GREATER THAN <limit>"``, ``valuenum`` NULL) instead of as a number.
    ferritin_report_limit_ng_per_ml : float
        Upper reporting limit of the (synthetic) ferritin assay, ng/mL.
    infected_fraction : float
        Fraction of stays with an infection, in (0, 1).
    endotype_prior : {"immunosep", "provide"}
        Observable endotype mix among screened stays (:data:`ENDOTYPE_PRIORS`).
    overwrite : bool
        Remove earlier generator output (only the table directories this function writes) before writing; refused
        when the directory holds those table directories but no ``_truth/summary.json`` (not generator output).
    progress : callable, optional
        Called as ``progress(stays_done, stays_total)`` after each block.
    layout : {"parquet-parts", "physionet-csv", "physionet-parquet", "duckdb"}
        How the tables are written (module docstring); the rows and values are the same in each.
    mimic_version : {"2.2", "3.1", "2.0"}
        Column set of the MIMIC-IV release (module docstring).

    Returns
    -------
    SynthSummary
        Row counts per table, bad-row counts, observable endotype counts, timing.

    Raises
    ------
    InputError
        On a bad argument or when ``out_dir`` already holds generator output and ``overwrite`` is False.
    """
    t_start = time.perf_counter()
    cfg = _make_cfg(
        stays=stays,
        seed=seed,
        chunk_stays=chunk_stays,
        bad_row_rate=bad_row_rate,
        censored_ferritin_rate=censored_ferritin_rate,
        limit=ferritin_report_limit_ng_per_ml,
        infected_fraction=infected_fraction,
        endotype_prior=endotype_prior,
        layout=layout,
        mimic_version=mimic_version,
    )
    out = Path(out_dir)
    _prepare_out_dir(out, overwrite)
    limit_text = f"GREATER THAN {ferritin_report_limit_ng_per_ml:g}"
    lab_texts = pa.array(["ART.", "VEN.", "MIX.", "ERROR", limit_text])

    schemas = _schemas_for(mimic_version)
    sink = _Sink(out, chunk_stays, stays, schemas)
    counters: dict[str, int] = {}
    bad_totals = dict.fromkeys(BAD_ROW_KINDS, 0)
    endo_counts = dict.fromkeys(ENDOTYPES, 0)
    n_blocks = math.ceil(stays / BLOCK_STAYS)
    for block in range(n_blocks):
        g0 = block * BLOCK_STAYS
        n = min(BLOCK_STAYS, stays - g0)
        tables = _generate_block(cfg, block, g0, n, counters, lab_texts)
        truth = tables["_truth/stays"]
        for k in BAD_ROW_KINDS:
            bad_totals[k] += int(pc.sum(truth[f"bad_{k}"]).as_py() or 0)
        scr = truth.filter(truth["screened"])["endotype_observable"].to_pylist()
        for e in scr:
            endo_counts[e] += 1
        sink.write_block(tables, g0, g0 + n)
        if progress is not None:
            progress(g0 + n, stays)
    rows = sink.close()
    for name, schema, data in (
        ("d_items", schemas["d_items"], _d_items()),
        ("d_labitems", schemas["d_labitems"], _d_labitems()),
    ):
        path = out / TABLE_DIRS[name] / "part-00000.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pydict(data, schema=schema), path)
        rows[name] = len(data["itemid"])
    _relayout(out, layout, mimic_version, schemas)
    summary = SynthSummary(
        out_dir=out,
        stays=stays,
        seed=seed,
        chunk_stays=chunk_stays,
        chunks=sink.n_chunks,
        rows=rows,
        bad_rows=bad_totals,
        endotypes_observable=endo_counts,
        seconds=time.perf_counter() - t_start,
        settings={
            "bad_row_rate": bad_row_rate,
            "censored_ferritin_rate": censored_ferritin_rate,
            "ferritin_report_limit_ng_per_ml": ferritin_report_limit_ng_per_ml,
            "infected_fraction": infected_fraction,
            "endotype_prior": endotype_prior,
            "latent_endotype_mix": list(cfg.q_class),
            "hla_dr_missing_probability": cfg.hla_missing,
            "screen_probability": cfg.screen_probability,
            "block_stays": BLOCK_STAYS,
            "layout": layout,
            "mimic_version": mimic_version,
        },
    )
    (out / "_truth" / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n", "utf-8")
    return summary
