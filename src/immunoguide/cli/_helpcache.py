"""The root help screen, kept once rendered: ``immunoguide --help`` without importing typer, click or rich.

typer renders the root help with rich; importing typer and rich and rendering takes 5–15 times what starting Python
takes, for a screen that only changes with the code and the terminal. The rendered text is kept under the cache
directory of the SQL cache (``IMMUNOGUIDE_CACHE_DIR``, else ``$XDG_CACHE_HOME/immunoguide`` or
``~/.cache/immunoguide``; ``help/<key>.txt``), keyed by everything the rendering depends on: the program name, whether
stdout is a terminal and its size, its encoding, the environment variables rich and typer read (``COLUMNS``, ``TERM``,
``NO_COLOR``, ``FORCE_COLOR``, ``TYPER_*`` …), and the source of the root group and the installed typer and rich
(path, size and modification time). A miss renders through typer as before, writes what it printed, and keeps it.
``IMMUNOGUIDE_HELP_CACHE=off`` renders every time. Only the exact command ``immunoguide --help`` is served here.
"""

from __future__ import annotations

import hashlib
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (not loaded when Python starts)
if TYPE_CHECKING:
    from typing import TextIO

#: Environment variables that change what rich or typer print (width, colour, encoding, markup).
_ENV = (
    "COLUMNS",
    "LINES",
    "TERM",
    "COLORTERM",
    "NO_COLOR",
    "FORCE_COLOR",
    "TTY_COMPATIBLE",
    "TTY_INTERACTIVE",
    "JUPYTER_COLUMNS",
    "JUPYTER_LINES",
    "PYTHONIOENCODING",
    "PYTHONUTF8",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
)
_ENV_PREFIXES = ("TYPER_", "_TYPER_", "RICH_")


def _enabled() -> bool:
    return os.environ.get("IMMUNOGUIDE_HELP_CACHE", "on").lower() not in ("off", "0", "no", "false")


def _cache_dir() -> str:
    """``help/`` in the cache directory the SQL cache uses (:mod:`os.path`: pathlib costs an import of ``re``)."""
    base = os.environ.get("IMMUNOGUIDE_CACHE_DIR")
    if base:
        return os.path.join(base, "help")
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(xdg, "immunoguide", "help")


def _stamp(path: str | None) -> str:
    if not path:
        return "-"
    try:
        st = os.stat(path)
    except OSError:
        return f"{path}:missing"
    return f"{path}:{st.st_size}:{st.st_mtime_ns}"


def _key(stream: TextIO) -> str:
    """Everything the rendered root help depends on, hashed."""
    from importlib.util import find_spec

    parts = [os.path.basename(sys.argv[0]), str(getattr(stream, "encoding", None))]
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    parts.append(f"tty={tty}")
    if tty:
        try:
            parts.append(str(tuple(os.get_terminal_size(stream.fileno()))))
        except (AttributeError, OSError, ValueError):
            parts.append("size?")
    parts += [f"{k}={os.environ.get(k)}" for k in _ENV]
    parts += sorted(f"{k}={v}" for k, v in os.environ.items() if k.startswith(_ENV_PREFIXES))
    here = os.path.dirname(os.path.abspath(__file__))
    parts += [_stamp(os.path.join(here, "_root.py")), _stamp(os.path.join(os.path.dirname(here), "__init__.py"))]
    for lib in ("typer", "rich"):
        spec = find_spec(lib)
        parts.append(_stamp(spec.origin if spec is not None else None))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:32]


class _Tee:
    """``sys.stdout`` as it is, keeping a copy of what is written."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        n = self.stream.write(text)  # first: a probe such as click's write(b"") fails as on the stream itself
        self.parts.append(text)
        return n

    def __getattr__(self, name: str) -> object:
        return getattr(self.stream, name)


def root_help() -> None:
    """Print ``immunoguide --help`` (from the cache, or rendered by typer and then kept); exits like typer does."""
    path = os.path.join(_cache_dir(), f"{_key(sys.stdout)}.txt") if _enabled() else None
    if path is not None:
        try:
            with open(path, encoding="utf-8", newline="") as f:
                text = f.read()
        except (OSError, ValueError):
            text = None
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            raise SystemExit(0)
    from immunoguide.cli._root import app

    tee = _Tee(sys.stdout)
    sys.stdout = tee  # type: ignore[assignment]
    code: object = 0
    try:
        app()
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.stdout = tee.stream
    if path is not None and code in (0, None) and tee.parts:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}.tmp"
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                f.write("".join(tee.parts))
            os.replace(tmp, path)
        except OSError:
            pass
    raise SystemExit(code)
