"""The REST service: FastAPI over the rules, the trial store and HL7 CDS Hooks (``immunoguide serve``).

Public surface: :func:`create_app` and :class:`ServiceSettings` (:mod:`immunoguide.service.app`); the HTTP error
mapping (:mod:`immunoguide.service.errors`); users and tokens (:mod:`immunoguide.service.auth`).
"""

from __future__ import annotations

from immunoguide.service._context import ServiceSettings
from immunoguide.service.app import create_app

__all__ = ["ServiceSettings", "create_app"]
