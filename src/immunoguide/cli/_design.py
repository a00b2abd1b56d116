"""``immunoguide design …``: sample size and simulated power for the next trial.

Register in ``cli/__init__.py`` with ``app.add_typer(design_app, name="design")``.

``--effect`` is an absolute difference, active − placebo, on the endpoint's scale:

* ``sofa-response``: SAP responder proportion (e.g. ``0.20`` for 20 % → 40 %), applied to both endotypes;
* ``mortality28``: 28-day mortality proportion (e.g. ``-0.15``);
* ``organ-support-free-days``: mean organ-support days among 28-day survivors, in days (e.g. ``-3``; negative
  favours the active arm). OSFD to day 28 = 28 − support days for survivors, −1 for deaths; Mann–Whitney U test.
  Every OSFD parameter is an assumption (no source); see ``design/priors.toml``.
"""

from __future__ import annotations

import json
import sys
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Literal, cast

import typer

from immunoguide.cli._common import EXIT_USAGE, fail
from immunoguide.errors import ImmunoguideError, InputError

if TYPE_CHECKING:  # scipy and the simulator are imported when a command runs, not when the CLI starts
    from immunoguide.design.power import Endpoint
    from immunoguide.design.simulate import Scenario

__all__ = ["design_app"]

design_app = typer.Typer(help="Next-trial design: sample size and simulated power.", no_args_is_help=True)


def _run(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` turning immunoguide errors into exit code 2 and warnings into stderr lines."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            out = fn()
        except ImmunoguideError as exc:
            fail(exc, EXIT_USAGE)
            return None
    for w in caught:
        sys.stderr.write(f"warning: {w.message}\n")
    return out


def _endpoint(value: str) -> str:
    from immunoguide.design.power import ENDPOINTS

    if value not in ENDPOINTS:
        raise typer.BadParameter(f"choose one of {', '.join(ENDPOINTS)}")
    return value


def _scenario(
    endpoint: str,
    effect: float,
    n: int,
    dropout: float | None,
    placebo_rate: float | None,
    placebo_mortality_mals: float | None,
    placebo_mortality_sii: float | None,
    support_days_placebo: float | None,
) -> Scenario:
    from immunoguide.design.simulate import Scenario

    mort: Any = None
    if placebo_mortality_mals is not None or placebo_mortality_sii is not None:
        if placebo_mortality_mals is None or placebo_mortality_sii is None:
            raise InputError(
                expected="both --placebo-mortality-mals and --placebo-mortality-sii (or neither)",
                got=(placebo_mortality_mals, placebo_mortality_sii),
                where="command line",
            )
        mort = {"MALS": placebo_mortality_mals, "SII": placebo_mortality_sii}
    return Scenario.from_priors(
        n_randomised=n,
        dropout=dropout,
        placebo_response=placebo_rate,
        response_effect=effect if endpoint == "sofa-response" else 0.0,
        placebo_mortality_28d=mort,
        mortality_effect=effect if endpoint == "mortality28" else 0.0,
        support_days_mean_placebo=support_days_placebo,
        support_days_effect=effect if endpoint == "organ-support-free-days" else 0.0,
    )


_EndpointOpt = Annotated[
    str,
    typer.Option("--endpoint", callback=_endpoint, help="sofa-response | mortality28 | organ-support-free-days"),
]
_DropoutOpt = Annotated[
    float | None, typer.Option("--dropout", help="Fraction randomised but not analysable (default 0.15, spec 6.1).")
]
_PlaceboRateOpt = Annotated[
    float | None,
    typer.Option("--placebo-rate", help="Placebo SAP responder rate, both endotypes (default 4/23 MALS, 22/122 SII)."),
]
_MortMalsOpt = Annotated[
    float | None, typer.Option("--placebo-mortality-mals", help="Placebo 28-day mortality, MALS (unknown: spec 7.3).")
]
_MortSiiOpt = Annotated[
    float | None, typer.Option("--placebo-mortality-sii", help="Placebo 28-day mortality, SII (unknown: spec 7.3).")
]
_SupportOpt = Annotated[
    float | None,
    typer.Option("--support-days-placebo", help="Mean organ-support days, placebo survivors (assumption)."),
]


@design_app.command("power")
def power_cmd(
    endpoint: _EndpointOpt,
    effect: Annotated[float, typer.Option("--effect", help="Active - placebo, on the endpoint's scale (see help).")],
    n: Annotated[int, typer.Option("--n", help="Patients randomised per trial (both arms, 1:1).")],
    sims: Annotated[int, typer.Option("--sims", help="Simulated trials.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same result).")] = 1,
    alpha: Annotated[float, typer.Option("--alpha", help="Two-sided significance level.")] = 0.05,
    dropout: _DropoutOpt = None,
    placebo_rate: _PlaceboRateOpt = None,
    placebo_mortality_mals: _MortMalsOpt = None,
    placebo_mortality_sii: _MortSiiOpt = None,
    support_days_placebo: _SupportOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the typed result as JSON.")] = False,
) -> None:
    """Simulated power (with its Monte Carlo error) of the SAP analysis of one endpoint.

    Binary endpoints also print the closed-form powers (normal, continuity-corrected, exact Fisher) at the
    expected analysable size per arm.
    """
    from immunoguide.design.power import simulated_power

    result = _run(
        lambda: simulated_power(
            _scenario(
                endpoint,
                effect,
                n,
                dropout,
                placebo_rate,
                placebo_mortality_mals,
                placebo_mortality_sii,
                support_days_placebo,
            ),
            endpoint,  # type: ignore[arg-type]
            n_sims=sims,
            seed=seed,
            alpha=alpha,
        )
    )
    typer.echo(json.dumps(result.to_dict(), indent=2, default=str) if as_json else result.summary())


@design_app.command("sample-size")
def sample_size_cmd(
    endpoint: _EndpointOpt = "sofa-response",
    p_placebo: Annotated[float, typer.Option("--p-placebo", help="Binary endpoints: placebo proportion.")] = 0.20,
    p_active: Annotated[float, typer.Option("--p-active", help="Binary endpoints: active proportion.")] = 0.40,
    effect: Annotated[
        float | None, typer.Option("--effect", help="organ-support-free-days: support-days difference (days).")
    ] = None,
    alpha: Annotated[float, typer.Option("--alpha", help="Two-sided significance level.")] = 0.05,
    power: Annotated[float, typer.Option("--power", help="Target power.")] = 0.90,
    dropout: Annotated[float, typer.Option("--dropout", help="Fraction not analysable (spec 6.1: 0.15).")] = 0.15,
    quantiles: Annotated[str, typer.Option("--quantiles", help="exact | table_2dp (z = 1.96, 1.28)")] = "exact",
    simulate: Annotated[bool, typer.Option("--simulate/--no-simulate", help="Check by simulation.")] = False,
    sims: Annotated[int, typer.Option("--sims", help="Simulated trials per evaluation.")] = 2000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Sample size: closed form for binary endpoints (with a simulated check), simulation for OSFD.

    Default: the SAP's planning assumptions, 40 % vs 20 %, two-sided alpha 0.05, power 0.90 (spec 6.1).
    """
    from immunoguide.design.power import sample_size_two_proportions, simulated_power, simulated_sample_size
    from immunoguide.design.simulate import Scenario

    out: dict[str, Any] = {"endpoint": endpoint}
    lines: list[str] = []
    if endpoint == "organ-support-free-days":
        if effect is None:
            fail(InputError(expected="--effect (support-days difference, days)", got=None, where="command line"))
            return
        res = _run(
            lambda: simulated_sample_size(
                _scenario(endpoint, effect, 280, dropout, None, None, None, None),
                "organ-support-free-days",
                target_power=power,
                n_sims=sims,
                seed=seed,
                alpha=alpha,
            )
        )
        out["simulated"] = res.to_dict()
        lines.append(
            f"organ-support-free days, effect {effect:+g} days: n randomised {res.n_randomised} "
            f"(simulated power {res.power:.4f}, MC SE {res.mc_se:.4f}, {sims} trials per size, seed {seed})"
        )
    else:
        q = cast(Literal["exact", "table_2dp"], quantiles)
        ss = _run(lambda: sample_size_two_proportions(p_placebo, p_active, alpha=alpha, power=power, quantiles=q))
        out["closed_form"] = ss.to_dict()
        total_cc = _run(lambda: ss.randomised_total(dropout, corrected=True))
        total_un = ss.randomised_total(dropout, corrected=False)
        out["randomised_total"] = {"dropout": dropout, "corrected": total_cc, "uncorrected": total_un}
        lines += [ss.summary(), f"randomised (dropout {dropout:g}): {total_cc} corrected, {total_un} uncorrected"]
        if simulate:
            diff = p_active - p_placebo
            sc_kwargs: dict[str, Any] = {"n_randomised": total_cc, "dropout": dropout}
            if endpoint == "sofa-response":
                sc_kwargs |= {"placebo_response": p_placebo, "response_effect": diff}
            else:
                sc_kwargs |= {"placebo_mortality_28d": p_placebo, "mortality_effect": diff}
            pr = _run(
                lambda: simulated_power(
                    Scenario.from_priors(**sc_kwargs),
                    cast("Endpoint", endpoint),
                    n_sims=sims,
                    seed=seed,
                    alpha=alpha,
                )
            )
            out["simulated_power"] = pr.to_dict()
            lines.append(
                f"simulated power at {total_cc} randomised: {pr.power:.4f} (MC SE {pr.mc_se:.4f}; {sims} trials, "
                f"seed {seed})"
            )
    typer.echo(json.dumps(out, indent=2, default=str) if as_json else "\n".join(lines))
