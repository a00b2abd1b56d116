"""One error tree for immunoguide, with stable codes.

Every error message follows the same shape: *expected …; got …; where …; what to do*.
Codes are stable (``IG-E1xx`` input, ``IG-E2xx`` criteria/protocol data, ``IG-E3xx`` rules,
``IG-E4xx`` trial operations, ``IG-E5xx`` statistics, ``IG-E6xx`` exchange with other systems) so that a CLI exit code, an HTTP error body or a log line can be
looked up in the docs. Only ``cli/`` maps these to exit codes and only ``service/`` to HTTP.

Tree::

    ImmunoguideError
    ├── InputError                  bad input data (IG-E1xx)
    │   ├── UnitError               unknown or mismatched unit
    │   ├── ImplausibleValueError   outside the concept's plausibility range
    │   ├── MissingInputError       a required input is absent
    │   ├── ConflictingInputError   two inputs disagree (e.g. fio2_fraction and fio2_percent, unit vs UCUM code)
    │   ├── MissingTableError       a table of a source database is not where the adapter looked (IG-E105)
    │   ├── MissingColumnError      a source table lacks a column the adapter reads (IG-E106)
    │   ├── UnreadableSourceError   a source file or database cannot be read as its layout says (IG-E107)
    │   ├── RecordsRejected         rows of an import refused, each with its reasons (IG-E108; nothing imported)
    │   ├── WeakSeed                an allocation-list seed without 128 bits of entropy (IG-E109)
    │   ├── DuplicateFieldError     a JSON object names the same field twice (IG-E110)
    │   ├── WrongTypeError          a value of the wrong JSON type (a boolean where a number belongs) (IG-E111)
    │   ├── InputTooLargeError      a body, number or nesting beyond the accepted size (IG-E112)
    │   └── UnknownTermError        an adverse-event term that is not a CTCAE term (IG-E113)
    ├── CriteriaError               bad threshold/protocol data files (IG-E2xx)
    │   ├── BandOverlapError        two bands claim the same value
    │   ├── BandGapError            some value falls in no band
    │   └── UnknownCriteriaError    criteria/protocol id not shipped
    ├── PolicyError                 unknown policy or policy option (IG-E3xx)
    ├── TrialError                  trial operations (IG-E4xx; subclassed by trial/)
    │   ├── AlreadyRandomized         the patient already has an allocation (IG-E401)
    │   ├── AllocationListMismatch    allocation list differs from its checksum/the store (IG-E402)
    │   ├── RandomizationWindowMissed the Sepsis-3 → first-dose window has closed (IG-E403)
    │   ├── NotRandomized             action needs a randomised patient (IG-E404)
    │   ├── DuplicateConsent          consent already recorded (IG-E405)
    │   ├── UnknownPatient            no such patient in the store (IG-E406)
    │   ├── WrongStratum              stratum differs from the classification (IG-E407)
    │   ├── NotAuthorized             role/site may not do this (IG-E408)
    │   ├── AuditChainBroken          audit trail or data edited behind its back (IG-E409)
    │   ├── NotEligible               eligibility not established (IG-E410)
    │   ├── ConsentMissing            no (valid) consent (IG-E411)
    │   ├── AllocationListUnavailable no list / list exhausted (IG-E412)
    │   ├── DuplicateRecord           record already exists (IG-E413)
    │   ├── PatientWithdrawn          patient has withdrawn (IG-E414)
    │   ├── NotAVisitDay              day is no protocol visit day (IG-E415)
    │   ├── StoreError                store not initialised/outdated/not empty (IG-E416)
    │   ├── UnknownRecord             no such record (IG-E417)
    │   ├── NotAuthenticated          no valid login/token (IG-E418; a NotAuthorized; REST 401)
    │   │   └── LoginThrottled        too many failed logins: locked for a while (IG-E421; REST 429)
    │   ├── ImplausibleTime           a time refused against the system clock or the trial's dates (IG-E419)
    │   └── TrialKeyError             the trial key is missing, malformed or not the store's (IG-E420)
    ├── StatisticsError             estimation or test cannot be computed (IG-E5xx)
    │   └── ConvergenceError        a model fit did not converge (IG-E501)
    └── ExchangeError               exchange with another system failed (IG-E6xx)
        └── UpstreamError           an EHR's FHIR server, JWK Set or authorization server failed (IG-E601; REST 502)

Warnings are separate: :class:`ImmunoguideWarning` and subclasses.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "AllocationListMismatch",
    "AllocationListUnavailable",
    "AlreadyRandomized",
    "AuditChainBroken",
    "BandGapError",
    "BandOverlapError",
    "ConflictingInputError",
    "ConsentMissing",
    "ConvergenceError",
    "CriteriaError",
    "DuplicateConsent",
    "DuplicateFieldError",
    "DuplicateRecord",
    "ExchangeError",
    "ImmunoguideError",
    "ImmunoguideWarning",
    "ImplausibleTime",
    "ImplausibleValueError",
    "InputError",
    "InputTooLargeError",
    "LoginThrottled",
    "MissingColumnError",
    "MissingInputError",
    "MissingTableError",
    "NotAVisitDay",
    "NotAuthenticated",
    "NotAuthorized",
    "NotEligible",
    "NotRandomized",
    "PatientWithdrawn",
    "PolicyError",
    "RandomizationWindowMissed",
    "RecordsRejected",
    "StatisticsError",
    "StoreError",
    "TrialError",
    "TrialKeyError",
    "UnitError",
    "UnknownCriteriaError",
    "UnknownPatient",
    "UnknownProtocolSettingWarning",
    "UnknownRecord",
    "UnknownTermError",
    "UnreadableSourceError",
    "UpstreamError",
    "WeakSeed",
    "WrongStratum",
    "WrongTypeError",
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


class MissingTableError(InputError):
    """A table of a source database (e.g. MIMIC-IV ``hosp/admissions``) is in none of the places the adapter looked."""

    code = "IG-E105"


class MissingColumnError(InputError):
    """A source table lacks a column the adapter reads (e.g. a file of another release or another database)."""

    code = "IG-E106"


class UnreadableSourceError(InputError):
    """A source file or database cannot be read: not the format its name says, damaged, or a value of the wrong type."""

    code = "IG-E107"


class RecordsRejected(InputError):
    """Rows of an import were refused; ``rows`` lists each refused row with its reasons, and nothing was imported."""

    code = "IG-E108"

    def __init__(self, *, rows: list[dict[str, Any]], **kwargs: Any) -> None:
        self.rows = rows
        super().__init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """The error record with the refused rows (``row``, ``record``, ``errors``)."""
        d = super().to_dict()
        d["rows"] = self.rows
        return d


class WeakSeed(InputError):
    """An allocation-list seed given by the user does not carry 128 bits of entropy (a guessable seed lets anyone
    who knows the generator rebuild the list)."""

    code = "IG-E109"


class DuplicateFieldError(InputError):
    """A JSON object names the same field twice (JSON parsers would silently keep the last value)."""

    code = "IG-E110"


class WrongTypeError(InputError):
    """A value of the wrong type: a boolean sent for a number (``false`` is not 0), a number for a yes/no field."""

    code = "IG-E111"


class InputTooLargeError(InputError):
    """A request body, a number or a nesting depth beyond what the platform accepts (never a clinical value)."""

    code = "IG-E112"


class UnknownTermError(InputError):
    """An adverse-event term that is not a term of the coding dictionary (CTCAE v5.0); free text is refused."""

    code = "IG-E113"


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


class AlreadyRandomized(TrialError):
    """The patient already holds an allocation slot: a patient is randomised once only."""

    code = "IG-E401"


class AllocationListMismatch(TrialError):
    """An allocation list file, its checksum or the slots in the store do not agree."""

    code = "IG-E402"


class RandomizationWindowMissed(TrialError):
    """The protocol's window from Sepsis-3 onset to the first blinded dose (ImmunoSep < 72 h) has closed."""

    code = "IG-E403"


class NotRandomized(TrialError):
    """The action (dose, kit, follow-up, AE, unblinding) needs a randomised patient."""

    code = "IG-E404"


class DuplicateConsent(TrialError):
    """A consent is already recorded for the patient."""

    code = "IG-E405"


class UnknownPatient(TrialError):
    """No patient with this study code is in the store (or not at the user's site)."""

    code = "IG-E406"


class WrongStratum(TrialError):
    """The stratum asked for differs from the patient's classified endotype, or the endotype is no stratum."""

    code = "IG-E407"


class NotAuthorized(TrialError):
    """The user's role (or site) may not perform the action or see the data."""

    code = "IG-E408"


class AuditChainBroken(TrialError):
    """The audit hash chain is broken, or a data table differs from what the audit trail recorded."""

    code = "IG-E409"


class NotEligible(TrialError):
    """The patient is not eligible (or eligibility is undetermined) under the protocol."""

    code = "IG-E410"


class ConsentMissing(TrialError):
    """The action needs a recorded, valid informed consent."""

    code = "IG-E411"


class AllocationListUnavailable(TrialError):
    """No imported allocation list for the site and stratum, or no free slot left in it."""

    code = "IG-E412"


class DuplicateRecord(TrialError):
    """The record already exists (patient code, follow-up day, dose, report, withdrawal, list)."""

    code = "IG-E413"


class PatientWithdrawn(TrialError):
    """The patient has withdrawn; no further treatment or data entry is accepted."""

    code = "IG-E414"


class NotAVisitDay(TrialError):
    """The study day is not a follow-up day of the protocol, or the item is not collected that day."""

    code = "IG-E415"


class StoreError(TrialError):
    """The trial store is not initialised, not at the current schema, or not empty where it must be."""

    code = "IG-E416"


class UnknownRecord(TrialError):
    """No record with this id (adverse event, kit, allocation list) for the patient."""

    code = "IG-E417"


class NotAuthenticated(NotAuthorized):
    """No valid credentials: missing, wrong or expired password or bearer token (REST answers 401)."""

    code = "IG-E418"


class ImplausibleTime(TrialError):
    """A time is refused: the event time differs from the system clock on a real store (``--now`` works only on a
    simulation store), a date lies before the trial or in the future, a visit time is outside its study day, or a
    late entry comes without its reason."""

    code = "IG-E419"


class TrialKeyError(TrialError):
    """The trial key (kept outside the database) is missing, malformed, or not the key the store was created with."""

    code = "IG-E420"


class LoginThrottled(NotAuthenticated):
    """Too many failed logins for the account or client: refused (even with the right password) for a while."""

    code = "IG-E421"


class StatisticsError(ImmunoguideError):
    """An estimate or test is undefined for the data (e.g. a zero cell with no correction requested)."""

    code = "IG-E500"


class ConvergenceError(StatisticsError):
    """A model fit (logistic, proportional-odds, Cox) did not converge; the message names the probable cause."""

    code = "IG-E501"


class ExchangeError(ImmunoguideError):
    """Exchange with another system (an EHR, its FHIR server or authorization server, a REDCap project) failed."""

    code = "IG-E600"


class UpstreamError(ExchangeError):
    """An EHR's FHIR server, JWK Set URL or SMART authorization server could not be reached or answered an error."""

    code = "IG-E601"


class ImmunoguideWarning(UserWarning):
    """Base of immunoguide warnings."""


class UnknownProtocolSettingWarning(ImmunoguideWarning):
    """A result depends on a protocol item whose value the sources do not give (tagged *unknown*)."""
