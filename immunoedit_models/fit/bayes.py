"""Bayesian posteriors of time-course problems with numpyro's NUTS.

The sampler runs on unconstrained coordinates z; the fit-scale vector is
x = low + (high - low) * sigmoid(z), so draws respect the bounds. The potential is
    U(z) = nll(x) - ln p(x) - ln |dx/dz|,
with p(x) the priors on the fit scale (`ParameterSet.log_prior_x`, flat within the bounds where a
parameter has no prior) and ln |dx/dz| = ln(high - low) + ln sigmoid(z) + ln sigmoid(-z).

The likelihood enters as an already-compiled numpy (value, gradient) function through
`jax.pure_callback` with a custom VJP. Tracing the ODE solver's gradient into numpyro's own jitted
kernels instead costs several fresh XLA compilations of the adjoint solve (~30 s on 2 cores for a
one-state model), while the callback reuses the one compilation the optimisers already made; the
per-call overhead is a few tens of microseconds.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from numpyro.diagnostics import summary
from numpyro.infer import MCMC, NUTS

from ..errors import FitError
from .optimize import check_count, check_point, check_seed, require_free
from .parameters import ParameterSet

#: Split R-hat (numpyro.diagnostics) needs at least four draws per chain.
MIN_SAMPLES = 4


def _to_x(z, lo, span):
    return lo + span * jax.nn.sigmoid(z)


def _to_z(x, lo, span):
    u = jnp.clip((x - lo) / span, 1e-9, 1 - 1e-9)
    return jnp.log(u) - jnp.log1p(-u)


def host_function(value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]]) -> Callable[[jax.Array], jax.Array]:
    """A JAX-differentiable scalar function x (k,) -> value that calls a numpy (value, gradient)
    function on the host (reverse mode only)."""

    def both(x):
        v, g = value_and_grad(np.asarray(x, dtype=np.float64))
        return np.float64(v), np.asarray(g, dtype=np.float64)

    def shapes(x):
        return (jax.ShapeDtypeStruct((), jnp.float64), jax.ShapeDtypeStruct(x.shape, jnp.float64))

    @jax.custom_vjp
    def f(x):
        return jax.pure_callback(both, shapes(x), x)[0]

    def fwd(x):
        v, g = jax.pure_callback(both, shapes(x), x)
        return v, g

    def bwd(g, cotangent):
        return (cotangent * g,)

    f.defvjp(fwd, bwd)
    return f


def check_value_and_grad(value_and_grad: Callable, x: np.ndarray) -> None:
    """FitError unless value_and_grad(x) is (a number, a gradient like x): checked once before sampling."""
    got = value_and_grad(x)
    ok = isinstance(got, tuple) and len(got) == 2 and np.ndim(got[0]) == 0 and np.shape(got[1]) == x.shape
    if not ok:
        shapes = [np.shape(part) for part in got] if isinstance(got, tuple) else np.shape(got)
        raise FitError(f"nuts_posterior needs value_and_grad(x) -> (value, gradient of shape {x.shape}), got a "
                       f"{type(got).__name__} of shape {shapes}; pass e.g. objective.raw_value_and_grad, "
                       "not objective.value")


def nuts_posterior(value_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]], params: ParameterSet,
                   x_init: np.ndarray,
                   num_warmup: int = 300, num_samples: int = 300, num_chains: int = 1, seed: int = 0,
                   target_accept: float = 0.8, progress: bool = False) -> xr.Dataset:
    """NUTS draws of the posterior given the negative log-likelihood's (value, gradient) on the fit scale.

    x_init: starting point (e.g. the maximum-likelihood estimate). Chains run sequentially (CPU).
    Returns draws in natural units over (chain, draw, parameter) with R-hat and effective sample
    size per parameter and the divergence count.
    """
    require_free(params, "nuts_posterior")
    x_init = check_point(params, x_init, "nuts_posterior x_init")
    num_warmup = check_count(num_warmup, "nuts_posterior num_warmup", 0, "num_warmup=300")
    num_samples = check_count(num_samples, "nuts_posterior num_samples", MIN_SAMPLES, "num_samples=300; "
                              f"R-hat needs {MIN_SAMPLES} draws per chain")
    num_chains = check_count(num_chains, "nuts_posterior num_chains", 1, "num_chains=1")
    seed = check_seed(seed, "nuts_posterior")
    if isinstance(target_accept, (bool, str, bytes)) or np.ndim(target_accept) != 0 or not 0 < target_accept < 1:
        raise FitError(f"nuts_posterior target_accept must be a number in (0, 1), got {target_accept!r} "
                       "(e.g. target_accept=0.8)")
    check_value_and_grad(value_and_grad, x_init)
    bounds = jnp.asarray(params.x_bounds)
    lo, span = bounds[:, 0], bounds[:, 1] - bounds[:, 0]
    nll = host_function(value_and_grad)

    def potential(z):
        x = _to_x(z, lo, span)
        log_jac = jnp.sum(jnp.log(span) + jax.nn.log_sigmoid(z) + jax.nn.log_sigmoid(-z))
        return nll(x) - params.log_prior_x(x) - log_jac

    kernel = NUTS(potential_fn=potential, target_accept_prob=target_accept)
    mcmc = MCMC(kernel, num_warmup=num_warmup, num_samples=num_samples, num_chains=num_chains,
                chain_method="sequential", progress_bar=progress)
    z0 = jnp.tile(_to_z(jnp.asarray(x_init, dtype=jnp.float64), lo, span), (num_chains, 1))
    mcmc.run(jax.random.PRNGKey(seed), init_params=z0 if num_chains > 1 else z0[0],
             extra_fields=("diverging",))
    z = np.asarray(mcmc.get_samples(group_by_chain=True))                 # (chain, draw, k)
    x = np.asarray(_to_x(z, np.asarray(lo), np.asarray(span)))
    natural = np.stack([np.exp(x[..., j]) if p.scale == "log" else x[..., j]
                        for j, p in enumerate(params.free)], axis=-1)
    diag = summary(natural, group_by_chain=True)["Param:0"]
    divergent = int(np.asarray(mcmc.get_extra_fields()["diverging"]).sum())
    return xr.Dataset(
        {"posterior": (("chain", "draw", "parameter"), natural),
         "posterior_fit_scale": (("chain", "draw", "parameter"), x),
         "r_hat": ("parameter", np.asarray(diag["r_hat"]).reshape(-1)),
         "ess": ("parameter", np.asarray(diag["n_eff"]).reshape(-1), {"description": "effective sample size"})},
        coords={"chain": np.arange(z.shape[0]), "draw": np.arange(z.shape[1]), "parameter": params.names},
        attrs={"sampler": "numpyro NUTS", "num_warmup": num_warmup, "num_samples": num_samples,
               "num_chains": num_chains, "seed": seed, "divergences": divergent,
               "target_accept": target_accept})
