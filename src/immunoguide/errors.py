"""One error tree for immunoguide, with stable codes.

Every error message follows the same shape: *expected …; got …; where …; what to do*.
Codes are stable (``IG-E1xx`` input, ``IG-E2xx`` criteria/protocol data, ``IG-E3xx`` rules,
``IG-E4xx`` trial operations) so that a CLI exit code, an HTTP error body or a log line can be
looked up in the docs. Only ``cli/`` maps these to exit codes and only ``service/`` to HTTP.

Tree::

    ImmunoguideError
    ├── InputError                  bad input data (IG-E1xx)
    │   ├── UnitError               unknown or mismatched unit
    │   ├── ImplausibleValueError   outside the concept's plausibility range
    │   ├── MissingInputError       a required input is absent
    │   └── ConflictingInputError   two inputs disagree (e.g. fio2_fraction and fio2_percent)
    ├── CriteriaError               bad threshold/protocol data files (IG-E2xx)
    │   ├── BandOverlapError        two bands claim the same value
    │   ├── BandGapError            some value falls in no band
    │   └── UnknownCriteriaError    criteria/protocol id not shipped
    ├── PolicyError                 unknown policy or policy option (IG-E3xx)
    └── TrialError                  trial operations (IG-E4xx; subclassed by trial/)

Warnings are separate: :class:`ImmunoguideWarning` and subclasses.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BandGapError",
    "BandOverlapError",
    "ConflictingInputError",
    "CriteriaError",
    "ImmunoguideError",
    "ImmunoguideWarning",
    "ImplausibleValueError",
    "InputError",
    "MissingInputError",
    "PolicyError",
    "TrialError",
    "UnitError",
    "UnknownCriteriaError",
    "UnknownProtocolSettingWarning",
]

DOCS_URL = "https://immunoguide.readthedocs.io/errors#"


class ImmunoguideError(Exception):
    """Base of every immunoguide error: carries a stable ``code`` and structured fields."""

    code: str = "IG-E000"

    def __init__(
        self,
        *,
        expected: str,
        got: Any,
        where: str | None = None,
        todo: str | None = None,
        code: str | None = None,
        field: str | None = None,
    ) -> None:
        if code is not None:
            self.code = code
        self.field = field
        self.expected = expected
        self.got = got
        self.where = where
        self.todo = todo
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [f"[{self.code}] expected {self.expected}; got {self.got!r}"]
        if self.where:
            parts.append(f"in {self.where}")
        if self.todo:
            parts.append(f"what to do: {self.todo}")
        return "; ".join(parts)

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe record of the error (used by the CLI error lines and the REST service)."""
        return {
            "code": self.code,
            "error": type(self).__name__,
            "expected": self.expected,
            "got": self.got if isinstance(self.got, (int, float, str, bool, type(None))) else repr(self.got),
            "where": self.where,
            "field": self.field,
            "todo": self.todo,
            "message": self.message,
        }


class InputError(ImmunoguideError):
    """The input data are malformed, in the wrong unit, implausible or incomplete."""

    code = "IG-E100"


class UnitError(InputError):
    """A value came with a unit that cannot be converted to the concept's canonical unit."""

    code = "IG-E101"


class ImplausibleValueError(InputError):
    """A value lies outside the plausibility range of its concept and is never scored."""

    code = "IG-E102"


class MissingInputError(InputError):
    """A required input is absent."""

    code = "IG-E103"


class ConflictingInputError(InputError):
    """Two inputs that describe the same quantity disagree or were both given."""

    code = "IG-E104"


class CriteriaError(ImmunoguideError):
    """A criteria or protocol data file is invalid."""

    code = "IG-E200"


class BandOverlapError(CriteriaError):
    """Two threshold bands of one ladder claim the same value."""

    code = "IG-E201"


class BandGapError(CriteriaError):
    """Some value of the input's domain falls into no threshold band."""

    code = "IG-E202"


class UnknownCriteriaError(CriteriaError):
    """The requested criteria (or protocol) id is not shipped."""

    code = "IG-E203"


class PolicyError(ImmunoguideError):
    """An unknown policy, or an option the policy does not offer."""

    code = "IG-E300"


class TrialError(ImmunoguideError):
    """Base of the trial-operation errors (randomisation, dosing, consent …)."""

    code = "IG-E400"


class ImmunoguideWarning(UserWarning):
    """Base of immunoguide warnings."""


class UnknownProtocolSettingWarning(ImmunoguideWarning):
    """A result depends on a protocol item whose value the sources do not give (tagged *unknown*)."""
