"""The web dashboard: server-rendered pages over the same trial functions as the REST routes.

Pages (``/dashboard/…``, Jinja2 templates in ``service/templates``, CSS in ``service/static``; no JavaScript, no
network resources):

``/dashboard/site``
    The site's patients: day of study, endotype and its history, alerts, eligibility, doses due today, missed
    doses, visit tasks, adverse events; screening form (with APACHE II, Charlson and mechanical ventilation);
    randomise action with a confirmation page whose result shows the randomisation number and the **kit numbers
    only**.
``/dashboard/patients/{code}``
    One patient: alerts (stratum switch, reversal, pending assay against the window), SOFA trajectory by
    component (inline SVG), biomarker timeline with the protocol's cut-offs drawn (ferritin, mHLA-DR; thresholds
    read from the protocol's classification and reversal rules), serial endotypes from the randomisation stratum
    with every sample (visit day or not) and pending samples, safety laboratory results with their CTCAE v5.0
    grades, the 15-day regimen calendar (given / late / missed / pending), forms for consent, labs, safety labs,
    doses, follow-up and adverse events (CTCAE terms offered as a list; free text is refused); each entry form has
    a field for the reason of a late entry (required more than 24 h after the event: :mod:`immunoguide.trial.clock`).
``/dashboard/trial``
    Recruitment by site and month (table and bar chart), screening log, CONSORT counts, assay turnaround per site
    and laboratory against the window, alerts — as the role may see them.
``/dashboard/dsmb``
    The unblinded DSMB view (role ``dsmb`` only): CONSORT by arm, arms of the randomised patients, safety signals
    on coded data with the DSMB's statistical rule (risk difference with its interval, posterior probability),
    alerts, worst safety-lab grades by arm.

``now`` is the service clock, which is the **store's clock** when the service runs on the default clock: the system
clock on a real store; a simulation store's simulated clock (the demo's, so study days and windows are those of its
data).

Authentication: ``POST /dashboard/login`` checks the password with the service's
:class:`~immunoguide.service.auth.UserStore` and puts the **same bearer token** the REST API issues into the cookie
``ig_dashboard`` (HttpOnly, SameSite=Strict, Path=/dashboard, Secure over HTTPS, expiring with the token); logout
revokes the token. Every form carries a CSRF field derived from the token (checked in constant time) on top of
SameSite=Strict.

Every page and action calls :mod:`immunoguide.trial` functions with the logged-in user's
:class:`~immunoguide.trial.access.Actor` and the service clock's ``now`` inside one store transaction, so
authorisation, site restriction and blinding happen in ``trial/`` (its role-aware read layer): the pages render
only what those functions return and never show a kit's label (its text names every content a route can hold).
A trial error becomes an HTML page (or the page re-rendered with an error banner) with the HTTP status of
:func:`immunoguide.service.errors.status_for`; a missing or expired login redirects to the login page.

Modules: :mod:`.templates` (Jinja2 environment, filters, security headers), :mod:`.session` (cookie login, CSRF,
the request context and the GET/POST wrappers), :mod:`.forms` (form parsing and the fields the forms offer),
:mod:`.plots` (inline SVG plots), :mod:`.pages` (the data and rendering of each page), :mod:`.routes` (the
FastAPI router). :data:`router` and :data:`COOKIE` are this package's public names (``service/app.py`` loads the
package by name: ``DASHBOARD_MODULE``).
"""

from __future__ import annotations

from immunoguide.service.dashboard.routes import router
from immunoguide.service.dashboard.session import COOKIE

__all__ = ["COOKIE", "router"]
