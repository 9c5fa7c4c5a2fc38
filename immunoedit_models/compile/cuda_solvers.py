"""The adaptive solvers of `numba_solvers` as one CUDA kernel: one trajectory per GPU thread.

numba.cuda has no first-class functions, and its per-thread (`cuda.local`) arrays need sizes
known at compile time, so the kernel is specialised per model: `cuda_backend` writes a module per
model and precision that defines the names below and then appends `solver_source()`, the
functions of this file decorated for numba.cuda (device functions, and the `*_kernel` functions
as cached kernels). The functions here are plain Python that is never called from this module;
they read these globals of the generated module:

    N, N_PAR_A, N_OUT_A       states; parameters and outputs (array sizes, at least 1)
    F, DTYPE                  numpy scalar type of states, parameters and stages (float64 or
                              float32); literals in state arithmetic are F(...)
    rhs, jac, tgrad, outputs, initial, dose_factors, lu_factor, lu_solve
                              the model's device functions (conventions of `numba_solvers`)
    R_*, T_*                  the Rodas5P and Tsit5 tables of `numba_solvers` cast to DTYPE
                              (`coefficient_tables`)
    SAFETY, QMIN, QMAX, BETA1, BETA2, ORDER, ERR_FLOOR, HMIN_REL, status and event codes
                              the step-size controller and codes of `numba_solvers`
    cuda                      numba.cuda (cuda.grid, cuda.local.array)

Semantics are those of `numba_solvers._integrator`, statement for statement: segments cut at
dose and scan times, scans read before the doses at their time, the RECIST progression rule and
`ev_guard`, its iRECIST confirmation and `ev_guard_c`, the step size carried across doses, status codes, NaN after a failure. Differences
are of form only: work arrays are `cuda.local` arrays, rows of 2-d arrays are addressed by index
(no views of local arrays), Tsit5 keeps its error vector in stage row 7, and the time and step
size stay float64 in float32 kernels (a float32 day number near 1,000 resolves only ~1e-4 day).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import numpy as np

from . import numba_solvers as ns

#: Names the generated module takes from `numba_solvers` unchanged (controller and codes).
SHARED_CONSTANTS = {
    "SAFETY": ns._SAFETY, "QMIN": ns._QMIN, "ORDER": ns._ORDER, "ERR_FLOOR": ns._ERR_FLOOR,
    "HMIN_REL": ns._HMIN_REL, "RODAS5P": ns.RODAS5P, "EVENT_BOLUS": ns.EVENT_BOLUS,
    "STATUS_OK": ns.STATUS_OK, "STATUS_MAX_STEPS": ns.STATUS_MAX_STEPS,
    "STATUS_NON_FINITE": ns.STATUS_NON_FINITE, "STATUS_STEP_UNDERFLOW": ns.STATUS_STEP_UNDERFLOW,
    "R_GAMMA": ns._R_GAMMA,
}


def coefficient_tables(dtype: type) -> dict[str, np.ndarray]:
    """The method tables of `numba_solvers` (the single source), cast to dtype for the stages;
    the controller's per-method arrays stay float64."""
    stage = {"R_A": ns._R_A, "R_C": ns._R_C, "R_c": ns._R_c, "R_d": ns._R_d, "R_H": ns._R_H,
             "T_c": ns._T_c, "T_A": ns._T_A, "T_E": ns._T_E, "T_R": ns._T_R}
    tables = {name: np.ascontiguousarray(a, dtype=dtype) for name, a in stage.items()}
    tables.update(QMAX=ns._QMAX.copy(), BETA1=ns._BETA1.copy(), BETA2=ns._BETA2.copy())
    return tables


# ---- small helpers ----------------------------------------------------------------------------
# numba.cuda (0.68) cannot compile the builtin min / max of two scalars; these keep the builtin's
# semantics (and so the CPU solver's, NaN included): the first argument unless the second is
# smaller (larger).
def _fmin(a, b):
    """min(a, b) as Python's builtin."""
    return b if b < a else a


def _fmax(a, b):
    """max(a, b) as Python's builtin."""
    return b if b > a else a


def _all_finite(v):
    """True if no entry of v (N,) is NaN or infinite."""
    for i in range(N):
        if not math.isfinite(v[i]):
            return False
    return True


def _all_finite_row(a, r):
    """True if no entry of row r of a is NaN or infinite."""
    for i in range(N):
        if not math.isfinite(a[r, i]):
            return False
    return True


def _rms_norm_row(e, r, y_old, y_new, rtol, atol):
    """Hairer's RMS norm of row r of e with scale atol + rtol * max(|y_old|, |y_new|) (float64)."""
    acc = 0.0
    for i in range(N):
        sc = atol + rtol * _fmax(abs(y_old[i]), abs(y_new[i]))
        q = e[r, i] / sc
        acc += q * q
    return math.sqrt(acc / N)


def _rms_norm(e, y_old, y_new, rtol, atol):
    """Hairer's RMS norm of e (N,), as `_rms_norm_row`."""
    acc = 0.0
    for i in range(N):
        sc = atol + rtol * _fmax(abs(y_old[i]), abs(y_new[i]))
        q = e[i] / sc
        acc += q * q
    return math.sqrt(acc / N)


def _eval_f(t, y, p, u_in, out):
    """out = rhs(t, y, p) + u_in (the current infusion rates)."""
    rhs(t, y, p, out)
    for i in range(N):
        out[i] += u_in[i]


def _zero_non_finite(jmat, dtg):
    """Non-finite partial derivatives -> 0 in the step's linear algebra (see numba_solvers)."""
    for i in range(N):
        if not math.isfinite(dtg[i]):
            dtg[i] = F(0.0)
        for j in range(N):
            if not math.isfinite(jmat[i, j]):
                jmat[i, j] = F(0.0)


def _initial_step(t, y, p, u_in, f0, rtol, atol, y1, f1):
    """Hairer's starting step (Hairer, Norsett & Wanner I, II.4) for order-5 methods [time]."""
    d0 = _rms_norm(y, y, y, rtol, atol)
    d1 = _rms_norm(f0, y, y, rtol, atol)
    h0 = 0.01 * d0 / d1 if (d0 >= 1e-5 and d1 >= 1e-5) else 1e-6
    for i in range(N):
        y1[i] = y[i] + h0 * f0[i]
    _eval_f(t + h0, y1, p, u_in, f1)
    for i in range(N):
        f1[i] -= f0[i]
    d2 = _rms_norm(f1, y, y, rtol, atol) / h0
    dmax = _fmax(d1, d2)
    h1 = _fmax(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / (ORDER + 1.0))
    return _fmin(100.0 * h0, h1)


# ---- linear algebra: the model's sparse LU of W, or W^-1 by Gauss-Jordan (numba_solvers) -----
def _invert(a, piv):
    """In-place inverse of a (N, N) with partial pivoting; False (a destroyed) if singular.
    The fallback when the sparse LU's pivot test fails (numba_solvers inverts by diagonal blocks:
    the same inverse up to rounding)."""
    for k in range(N):
        p = k
        amax = abs(a[k, k])
        for i in range(k + 1, N):
            if abs(a[i, k]) > amax:
                amax = abs(a[i, k])
                p = i
        piv[k] = p
        if amax == 0.0:
            return False
        if p != k:
            for j in range(N):
                a[k, j], a[p, j] = a[p, j], a[k, j]
        inv = F(1.0) / a[k, k]
        a[k, k] = F(1.0)
        for j in range(N):
            a[k, j] *= inv
        for i in range(N):
            if i != k:
                f = a[i, k]
                if f != 0.0:
                    a[i, k] = F(0.0)
                    for j in range(N):
                        a[i, j] -= f * a[k, j]
    for k in range(N - 1, -1, -1):      # row swaps of a are column swaps of its inverse
        p = piv[k]
        if p != k:
            for i in range(N):
                a[i, k], a[i, p] = a[i, p], a[i, k]
    return True


def _matvec_row(a, b, out, r):
    """out[r] = a @ b for a (N, N), b (N,), into row r of out."""
    for i in range(N):
        acc = F(0.0)
        for j in range(N):
            acc += a[i, j] * b[j]
        out[r, i] = acc


# ---- one step of each method ----------------------------------------------------------------
def _factor_w(inv_hg, jmat, scale, w, piv):
    """W = inv_hg I - J into w: 1 by the model's sparse LU, else 0 by dense inversion, -1 when
    W is singular (numba_solvers._factor_w)."""
    if lu_factor(inv_hg, jmat, scale, w):
        return 1
    for i in range(N):
        for j in range(N):
            w[i, j] = -jmat[i, j]
        w[i, i] += inv_hg
    return 0 if _invert(w, piv) else -1


def _solve_w(sparse, w, b, out, r):
    """out[r] = W^-1 b with w as `_factor_w` left it."""
    if sparse:
        lu_solve(w, b, out, r)
    else:
        _matvec_row(w, b, out, r)


def _rodas_step(t, h, y, p, u_in, f0, jmat, dtg, scale, w, piv, k, ytmp, ftmp, y_new):
    """Rodas5P step of size h: stages into k (8, N) (k[7]: error estimate), solution into y_new.
    scale: the error weights for the sparse LU's pivot test. Returns False when
    W = I/(h gamma) - J is singular."""
    mode = _factor_w(F(1.0 / (h * R_GAMMA)), jmat, scale, w, piv)
    if mode < 0:
        return False
    sparse = mode == 1
    inv_h = 1.0 / h
    hd = F(h * R_d[0])
    for i in range(N):
        ftmp[i] = f0[i] + hd * dtg[i]
    _solve_w(sparse, w, ftmp, k, 0)
    for s in range(1, 8):
        hd = F(h * R_d[s])
        for i in range(N):
            y_new[i] = u_in[i] + hd * dtg[i]
        if s < 6:
            for i in range(N):
                ytmp[i] = y[i]
            for j in range(s):
                a = R_A[s, j]
                c = F(R_C[s, j] * inv_h)
                for i in range(N):
                    kji = k[j, i]
                    ytmp[i] += a * kji
                    y_new[i] += c * kji
        else:                   # A[6] = A[5] + e_5, A[7] = A[6] + e_6
            for i in range(N):
                ytmp[i] += k[s - 1, i]
            for j in range(s):
                c = F(R_C[s, j] * inv_h)
                for i in range(N):
                    y_new[i] += c * k[j, i]
        rhs(t + R_c[s] * h, ytmp, p, ftmp)
        for i in range(N):
            ftmp[i] += y_new[i]
        _solve_w(sparse, w, ftmp, k, s)
    for i in range(N):          # stiffly accurate: B = A[7] + e_7
        y_new[i] = ytmp[i] + k[7, i]
    return True


def _rodas_dense_row(theta, y, y_new, k, y_out, b, r):
    """Rodas5P 4th-order interpolant at t + theta h into y_out[b, r] (see numba_solvers)."""
    s = 1.0 - theta
    for i in range(N):
        y_out[b, r, i] = s * y[i] + theta * y_new[i]
    ts = theta * s
    for j in range(8):
        wj = F(ts * (R_H[0, j] + theta * (R_H[1, j] + theta * R_H[2, j])))
        for i in range(N):
            y_out[b, r, i] += wj * k[j, i]


def _tsit5_step(t, h, y, p, u_in, k, ftmp, y_new):
    """Tsit5 step of size h; k[0] = f(t, y) on entry, k[6] = f(t + h, y_new) and the error
    vector h sum_j E_j k_j in k[7] on exit."""
    for s in range(1, 7):
        for i in range(N):
            y_new[i] = y[i]
        for j in range(s):
            a = F(h * T_A[s, j])
            for i in range(N):
                y_new[i] += a * k[j, i]
        _eval_f(t + T_c[s] * h, y_new, p, u_in, ftmp)
        for i in range(N):
            k[s, i] = ftmp[i]
    for i in range(N):
        k[7, i] = F(0.0)
    for j in range(7):
        e = F(h * T_E[j])
        for i in range(N):
            k[7, i] += e * k[j, i]


def _tsit5_dense_row(theta, h, y, k, y_out, b, r):
    """Tsit5 continuous extension at t + theta h into y_out[b, r]."""
    for i in range(N):
        y_out[b, r, i] = y[i]
    for j in range(7):
        bj = F(h * (theta * (T_R[j, 0] + theta * (T_R[j, 1] + theta * (T_R[j, 2]
                                                                         + theta * T_R[j, 3])))))
        for i in range(N):
            y_out[b, r, i] += bj * k[j, i]


# ---- events, scans, control -------------------------------------------------------------------
def _apply_events(t, ie, b, ev_t, ev_state, ev_kind, ev_value, ev_guard, ev_guard_c, pd_time,
                  cpd_time, y, u_in):
    """Apply every event of trajectory b from index ie with time <= t, skipping those guarded by
    a progression at pd_time (ev_guard >= pd_time) or a confirmed one at cpd_time (ev_guard_c >=
    cpd_time); returns the next index."""
    n_ev = ev_t.shape[1]
    while ie < n_ev and ev_t[b, ie] <= t:
        if ev_guard[b, ie] >= pd_time or ev_guard_c[b, ie] >= cpd_time:
            pass
        elif ev_kind[b, ie] == EVENT_BOLUS:
            y[ev_state[b, ie]] += ev_value[b, ie]
        else:
            u_in[ev_state[b, ie]] += ev_value[b, ie]
        ie += 1
    return ie


def _scan(t, y, p, out_buf, burden_index, b, s, scan_value, nadir, pd_time, pd_value, cpd_time,
          pd_rel, pd_abs, cpd_abs):
    """Record scan s of trajectory b at time t; returns the updated (nadir, pd_time, pd_value,
    cpd_time) (rules: numba_solvers.progression and confirmed_progression)."""
    outputs(t, y, p, out_buf)
    value = float(out_buf[burden_index])
    scan_value[b, s] = value
    if s > 0:
        if pd_time == math.inf:
            if value >= (1.0 + pd_rel) * nadir and value - nadir >= pd_abs:
                pd_time = t
                pd_value = value
        elif cpd_time == math.inf and value - pd_value >= cpd_abs:
            cpd_time = t
    return _fmin(nadir, value), pd_time, pd_value, cpd_time


def _attempt(rodas, t, h, y, p, u_in, f0, jmat, dtg, scale, w, piv, k, ytmp, ftmp, y_new, rtol,
             atol):
    """One step attempt of the chosen method; the scaled error norm (inf: singular W)."""
    if rodas:
        if not _rodas_step(t, h, y, p, u_in, f0, jmat, dtg, scale, w, piv, k, ytmp, ftmp, y_new):
            return math.inf
    else:
        _tsit5_step(t, h, y, p, u_in, k, ftmp, y_new)
    return _rms_norm_row(k, 7, y, y_new, rtol, atol)


def _dense_outputs(rodas, t, h, t_new, io, t_out, y, y_new, k, y_out, b):
    """Write outputs with t_out in [t, t_new) by dense output of the accepted step; next index."""
    n_out = t_out.shape[0]
    while io < n_out and t_out[io] < t_new:
        theta = (t_out[io] - t) / h
        if rodas:
            _rodas_dense_row(theta, y, y_new, k, y_out, b, io)
        else:
            _tsit5_dense_row(theta, h, y, k, y_out, b, io)
        io += 1
    return io


def _accept_factor(err, err_old, last_rejected, qmax, beta1, beta2):
    """PI step-size factor after an accepted step (no growth right after a rejection)."""
    fac = SAFETY * _fmax(err, 1e-10) ** (-beta1) * err_old ** beta2
    return _fmin(1.0 if last_rejected else qmax, _fmax(QMIN, fac))


def _reject_factor(err, last_rejected, err_prev, h_prev, h):
    """Step-size factor after a rejected step (see numba_solvers._reject_factor)."""
    if not math.isfinite(err):
        return QMIN
    expo = 1.0 / ORDER
    if last_rejected and math.isfinite(err_prev) and err_prev > err and h_prev > h:
        q = math.log(err_prev / err) / math.log(h_prev / h)
        expo = 1.0 / _fmin(ORDER, _fmax(1.0, q))
    return _fmax(QMIN, SAFETY * err ** (-expo))


# ---- kernels ------------------------------------------------------------------------------------
def solve_kernel(y0, p, t0, t_out, ev_t, ev_state, ev_kind, ev_value, ev_guard, ev_guard_c,
                 scan_t, n_scan, burden_index, pd_rel, pd_abs, cpd_abs, rtol, atol, method,
                 max_steps, h0,
                 y_out, status_out, n_acc_out, n_rej_out, scan_value, pd_time_out):
    """Integrate trajectory b = thread index (see numba_solvers._integrator).

    y0 (B, N), p (B, n_par) DTYPE; t_out (n_out,) float64; ev_* (B, n_ev) (n_ev >= 1, padded
    with ev_t = +inf); scan_t (1 or B, >= 1): row 0 shared by the batch or one row per
    trajectory, of which the first n_scan are scans. Writes y_out
    (B, n_out, N) DTYPE, status/n_acc/n_rej (B,) int64, scan_value (B, >= n_scan), pd_time (B,).
    """
    b = cuda.grid(1)
    if b >= y0.shape[0]:
        return
    y = cuda.local.array(N, DTYPE)
    y_new = cuda.local.array(N, DTYPE)
    ytmp = cuda.local.array(N, DTYPE)
    ftmp = cuda.local.array(N, DTYPE)
    f0 = cuda.local.array(N, DTYPE)
    dtg = cuda.local.array(N, DTYPE)
    scale = cuda.local.array(N, DTYPE)
    u_in = cuda.local.array(N, DTYPE)
    jmat = cuda.local.array((N, N), DTYPE)
    w = cuda.local.array((N, N), DTYPE)
    piv = cuda.local.array(N, np.int32)
    k = cuda.local.array((8, N), DTYPE)
    pb = cuda.local.array(N_PAR_A, DTYPE)
    out_buf = cuda.local.array(N_OUT_A, DTYPE)
    for j in range(p.shape[1]):
        pb[j] = p[b, j]
    for i in range(N):
        y[i] = y0[b, i]
        u_in[i] = F(0.0)
    n_out = t_out.shape[0]
    n_ev = ev_t.shape[1]
    sr = b if scan_t.shape[0] > 1 else 0      # this trajectory's row of scan days
    rodas = method == RODAS5P
    qmax = QMAX[method]
    beta1 = BETA1[method]
    beta2 = BETA2[method]

    t = t0
    h = 0.0
    h_carry = 0.0
    h_restart = 0.0
    status = STATUS_OK
    n_acc = 0
    n_rej = 0
    ie = 0
    io = 0
    i_scan = 0
    nadir = math.inf
    pd_time = math.inf
    pd_value = math.inf
    cpd_time = math.inf
    while status == STATUS_OK:
        while i_scan < n_scan and scan_t[sr, i_scan] <= t:
            nadir, pd_time, pd_value, cpd_time = _scan(
                t, y, pb, out_buf, burden_index, b, i_scan, scan_value, nadir, pd_time, pd_value,
                cpd_time, pd_rel, pd_abs, cpd_abs)
            i_scan += 1
        ie = _apply_events(t, ie, b, ev_t, ev_state, ev_kind, ev_value, ev_guard, ev_guard_c,
                           pd_time, cpd_time, y, u_in)
        if not _all_finite(y):
            status = STATUS_NON_FINITE
            break
        while io < n_out and t_out[io] <= t:
            for i in range(N):
                y_out[b, io, i] = y[i]
            io += 1
        if io == n_out:
            break
        t_end = t_out[n_out - 1]
        if ie < n_ev and ev_t[b, ie] < t_end:
            t_end = ev_t[b, ie]
        if i_scan < n_scan and scan_t[sr, i_scan] < t_end:
            t_end = scan_t[sr, i_scan]

        # restart at (t, y); step size carried over, capped by the first step after the last
        # event (numba_solvers._integrator explains why)
        _eval_f(t, y, pb, u_in, f0)
        for i in range(N):
            k[0, i] = f0[i]
        if h_carry > 0.0:
            h = _fmin(h_carry, h_restart) if h_restart > 0.0 else h_carry
        elif h0 <= 0.0:
            h = _initial_step(t, y, pb, u_in, f0, rtol, atol, ytmp, ftmp)
        else:
            h = h0
        err_old = 1.0
        last_rejected = False
        err_rej = math.inf
        h_rej = 0.0
        new_point = True
        f_valid = True
        first = h_carry > 0.0
        while t < t_end:
            if new_point:
                if not f_valid:
                    _eval_f(t, y, pb, u_in, f0)
                if rodas:
                    if not _all_finite(f0):
                        status = STATUS_NON_FINITE
                        break
                    jac(t, y, pb, jmat)
                    tgrad(t, y, pb, dtg)
                    _zero_non_finite(jmat, dtg)
                    for i in range(N):
                        scale[i] = atol + rtol * abs(y[i])
                elif not _all_finite_row(k, 0):     # Tsit5: f(t, y) in k[0] (FSAL)
                    status = STATUS_NON_FINITE
                    break
                new_point = False
            if n_acc + n_rej >= max_steps:
                status = STATUS_MAX_STEPS
                break
            last = t + 1.01 * h >= t_end
            h_step = t_end - t if last else h
            err = _attempt(rodas, t, h_step, y, pb, u_in, f0, jmat, dtg, scale, w, piv, k, ytmp,
                           ftmp, y_new, rtol, atol)
            if err <= 1.0:
                t_new = t_end if last else t + h_step
                io = _dense_outputs(rodas, t, h_step, t_new, io, t_out, y, y_new, k, y_out, b)
                for i in range(N):
                    y[i] = y_new[i]
                t = t_new
                n_acc += 1
                if not _all_finite(y):
                    status = STATUS_NON_FINITE
                    break
                if not rodas:
                    for i in range(N):
                        k[0, i] = k[6, i]       # FSAL
                new_point = True
                f_valid = not rodas
                h_next = h_step * _accept_factor(err, err_old, last_rejected, qmax, beta1, beta2)
                h = _fmax(h, h_next) if last else h_next
                err_old = _fmax(err, ERR_FLOOR)
                last_rejected = False
                if first and not last:
                    h_restart = h_step * _fmin(qmax, SAFETY * _fmax(err, 1e-10) ** (-1.0 / ORDER))
                first = False
            else:
                n_rej += 1
                h = h_step * _reject_factor(err, last_rejected, err_rej, h_rej, h_step)
                err_rej = err
                h_rej = h_step
                last_rejected = True
                if h < HMIN_REL * _fmax(1.0, abs(t)):
                    status = STATUS_STEP_UNDERFLOW
                    break
        h_carry = h
    for r in range(io, n_out):
        for i in range(N):
            y_out[b, r, i] = math.nan
    for s in range(i_scan, n_scan):
        scan_value[b, s] = math.nan
    status_out[b] = status
    n_acc_out[b] = n_acc
    n_rej_out[b] = n_rej
    pd_time_out[b] = pd_time


def initial_kernel(p, y0):
    """y0[b] = initial(p[b]) for b = thread index; p (B, n_par), y0 (B, N)."""
    b = cuda.grid(1)
    if b < p.shape[0]:
        initial(p[b], y0[b])


def dose_factors_kernel(p, out):
    """out[b] = dose_factors(p[b]); out (B, n_drugs)."""
    b = cuda.grid(1)
    if b < p.shape[0]:
        dose_factors(p[b], out[b])


def outputs_kernel(t_out, y, p, out):
    """out[b, i] = outputs(t_out[i], y[b, i], p[b]), one thread per (b, i); out (B, n_t, n_o)."""
    g = cuda.grid(1)
    n_t = t_out.shape[0]
    b = g // n_t
    if b < y.shape[0]:
        i = g - b * n_t
        outputs(t_out[i], y[b, i], p[b], out[b, i])


DEVICE_FUNCTIONS: tuple[Callable, ...] = (
    _fmin, _fmax, _all_finite, _all_finite_row, _rms_norm_row, _rms_norm, _eval_f,
    _zero_non_finite, _initial_step, _invert, _matvec_row, _factor_w, _solve_w, _rodas_step,
    _rodas_dense_row, _tsit5_step, _tsit5_dense_row, _apply_events, _scan, _attempt,
    _dense_outputs, _accept_factor, _reject_factor)
KERNELS: tuple[Callable, ...] = (solve_kernel, initial_kernel, dose_factors_kernel, outputs_kernel)


def solver_source() -> str:
    """Source of the solver for a generated module: device functions, then cached kernels."""
    parts = [f"@cuda.jit(device=True)\n{inspect.getsource(f)}" for f in DEVICE_FUNCTIONS]
    parts += [f"@cuda.jit(cache=True)\n{inspect.getsource(f)}" for f in KERNELS]
    return "\n\n".join(parts)
