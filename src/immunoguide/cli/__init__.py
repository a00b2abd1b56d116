"""The ``immunoguide`` command: a thin shell over the public API.

Only this package maps :mod:`immunoguide.errors` to exit codes:
0 = every record processed, 1 = some records were rejected (error records written), 2 = usage error,
3 = a data/criteria file is invalid.

Importing this package imports nothing else: the typer application (:mod:`immunoguide.cli._root`, ``app``) is built
when it is first used, and each command imports its own module when it runs. ``immunoguide --help`` prints the root
help from the help cache when it holds it for this terminal and code (:mod:`immunoguide.cli._helpcache`).
"""

from __future__ import annotations

import sys

__all__ = ["COMMANDS", "app", "load_command", "main"]


def __getattr__(name: str) -> object:
    if name in ("app", "COMMANDS", "LazyGroup", "load_command"):
        from immunoguide.cli import _root

        return getattr(_root, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Console entry point."""
    if sys.argv[1:] == ["--version"]:  # as the root's --version option prints it, without building the app
        from immunoguide import __version__

        sys.stdout.write(f"immunoguide {__version__}\n")
        return
    if sys.argv[1:] == ["--help"]:
        from immunoguide.cli._helpcache import root_help

        root_help()  # exits
    from immunoguide.cli._root import app

    app()
