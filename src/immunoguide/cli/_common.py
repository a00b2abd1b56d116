"""Helpers shared by CLI commands: JSON-lines batch processing and policy options."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import typer

from immunoguide.errors import ImmunoguideError, PolicyError

EXIT_OK = 0
EXIT_SOME_REJECTED = 1
EXIT_USAGE = 2
EXIT_BAD_DATA_FILE = 3


def parse_policy_options(items: Iterable[str]) -> dict[str, str]:
    """``["gcs_when_sedated=assume_normal"]`` → ``{"gcs_when_sedated": "assume_normal"}``."""
    out: dict[str, str] = {}
    for item in items:
        name, sep, opt = item.partition("=")
        if not sep or not name or not opt:
            raise PolicyError(
                expected="--policy NAME=OPTION",
                got=item,
                where="command line",
                todo="write the policy as name=option, e.g. --policy gcs_when_sedated=assume_normal",
            )
        out[name.strip()] = opt.strip()
    return out


def run_jsonl(
    stream: TextIO,
    out: TextIO,
    handle: Callable[[dict[str, Any], str], dict[str, Any]],
) -> int:
    """Apply ``handle`` to each JSON line; bad lines get an error record and the rest are still processed.

    Each line is decoded with :func:`immunoguide.jsonsafe.loads_strict`: a duplicate key (``IG-E110``), a
    number or nesting beyond the limits (``IG-E112``), NaN/Infinity or broken JSON (``IG-E100``) rejects that
    line only. Returns the exit code: 0 when every line was processed, 1 when at least one line was rejected.
    """
    rejected = 0
    for lineno, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        where = f"line {lineno}"
        try:
            from immunoguide.jsonsafe import loads_strict

            record = loads_strict(line, where=where)
            if not isinstance(record, dict):
                from immunoguide.errors import InputError

                raise InputError(expected="one JSON object per line", got=type(record).__name__, where=where,
                                 todo="send one {...} object per line")
            result = {"line": lineno, **handle(record, where)}
        except ImmunoguideError as exc:
            rejected += 1
            result = {"line": lineno, "error": exc.to_dict()}
        out.write(json.dumps(result, sort_keys=False, default=str) + "\n")
        out.flush()
    return EXIT_SOME_REJECTED if rejected else EXIT_OK


def fail(exc: ImmunoguideError, code: int = EXIT_USAGE) -> None:
    """Print an error on stderr and exit with ``code``."""
    sys.stderr.write(exc.message + "\n")
    raise typer.Exit(code)
