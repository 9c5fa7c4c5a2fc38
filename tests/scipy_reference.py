"""An independent simulator for tests: sympy.lambdify (numpy) + scipy solve_ivp, piecewise over doses.

It shares only the symbolic model with the package (no generated code, no package solver).
Outputs at a dose time are post-dose (right-continuous), as in the package.
"""

from __future__ import annotations

import numpy as np
import sympy as sp
from scipy.integrate import solve_ivp

from immunoedit_models.simulate.regimen import Regimen


def scipy_simulate(sym, times, regimen: Regimen | None = None, params: dict | None = None,
                   method: str = "Radau", rtol: float = 1e-10, atol: float = 1e-12) -> np.ndarray:
    """States (n_time, n_state) at `times`, starting at times[0]; bolus doses as exact jumps."""
    values = dict(zip(sym.parameters, sym.param_values)) | dict(params or {})
    p = np.array([values[n] for n in sym.parameters])
    subs = dict(zip(sym.param_symbols, p))
    args = (sym.time, sym.state_symbols, sym.param_symbols)
    f = sp.lambdify(args, list(sym.rhs), "numpy")
    jac = sp.lambdify(args, sym.jacobian, "numpy")
    factor = {d: float(t.factor.subs(subs)) for d, t in sym.dose_targets.items()}
    index = {d: sym.states.index(t.state) for d, t in sym.dose_targets.items()}
    doses = (regimen or Regimen.none()).doses
    amount = {d.amount: float(sp.sympify(d.amount, locals=dict(zip(sym.parameters, sym.param_symbols))).subs(subs))
              if isinstance(d.amount, str) else d.amount for d in doses}  # trusted test text
    assert all(d.duration == 0 for d in doses), "the scipy reference handles boluses only"

    times = np.asarray(times, float)
    y = np.array([float(e.subs(subs)) for e in sym.initial])
    out = np.full((len(times), len(y)), np.nan)
    t = times[0]
    boundaries = sorted({d.time for d in doses if times[0] < d.time <= times[-1]} | {times[-1]})
    for end in boundaries:
        for d in doses:
            if d.time == t or (t == times[0] and d.time < t):
                y[index[d.drug]] += amount[d.amount] * factor[d.drug]
        inside = (times >= t) & (times < end)
        if end > t:
            sol = solve_ivp(lambda s, x: f(s, x, p), (t, end), y, method=method,
                            t_eval=np.append(times[inside], end),
                            jac=lambda s, x: np.asarray(jac(s, x, p), float), rtol=rtol, atol=atol)
            out[inside] = sol.y.T[:-1]
            y = sol.y[:, -1].copy()
        t = end
    for d in doses:
        if d.time == t and t > times[0]:
            y[index[d.drug]] += amount[d.amount] * factor[d.drug]
    out[times == t] = y
    return out
