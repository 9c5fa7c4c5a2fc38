"""Forward sensitivities in the numba backend: Rodas5P on the state and its parameter derivatives.

For dy/dt = f(t, y, p) + u(t) the sensitivities S_m = dy/dp_m (m over k chosen parameters) obey
dS_m/dt = J S_m + df/dp_m + du/dp_m (the sensitivity equations). The solver integrates the
augmented system Y = (y, S_1, ..., S_k) (flat, size n (k + 1)) with Rodas5P and the exact
augmented Jacobian

    J_aug = [[J,   0],           C_m = d(J S_m + df/dp_m)/dy  (second derivatives of f),
             [C_m, J]]

so the method keeps its order for the sensitivities too (simultaneous corrector; the
discretisation is the same as `numba_solvers`' for y, which it reproduces step for step when
sensitivities are left out of the error test). W_aug = I/(h gamma) - J_aug is never formed:
it is block lower triangular with k + 1 copies of W = I/(h gamma) - J on the diagonal, so each
stage solves x_y = W^-1 b_y and x_m = W^-1 (b_m + C_m x_y), with W inverted once per step
(by its own Jacobian blocks, `numba_solvers._invert_blocks`) and C_m x_y a directional
derivative computed by a generated kernel. Cost per stage: k + 1 small solves and three
sparse kernels, instead of an (n (k + 1))^2 dense system.

Generated kernels (see `sensitivity_kernels`), S and out flat (n k,), entry i k + m = dy_i/dp_m
(state-major, so that loops over the parameters are contiguous and vectorise):
    sens_rhs(t, y, p, S, out)          out = J S + df/dp
    sens_dir(t, y, p, S, v (n,), out)  out = sum_j v_j d(J S + df/dp)/dy_j
    sens_tgrad(t, y, p, S, out)        out = d(J S + df/dp)/dt

Events: a bolus adds its value to y_i and its parameter derivatives to S_m,i; an infusion rate
adds to u_i and du_i/dp_m (the derivatives per event and parameter come from the caller). Event
times do not depend on parameters. Scans and treatment until progression (a discontinuous
function of the parameters) are not supported here.
"""

from __future__ import annotations

import numpy as np
from numba import boolean, float64, int64, njit, prange, types, void

from .numba_solvers import (_BETA1, _BETA2, _QMAX, _R_A, _R_C, _R_GAMMA, _R_c, _R_d, EVENT_BOLUS,
                            JAC_TYPE, RHS_TYPE, RODAS5P, STATUS_MAX_STEPS, STATUS_NON_FINITE,
                            STATUS_OK, STATUS_STEP_UNDERFLOW, TGRAD_TYPE, _advance,
                            _after_accept, _after_reject, _all_finite, _block_solve_row,
                            _initial_step, _invert_blocks, _restart_step, _rms_norm, compiled)

SENS_SIG = void(float64, float64[::1], float64[::1], float64[::1], float64[::1])
SENS_DIR_SIG = void(float64, float64[::1], float64[::1], float64[::1], float64[::1], float64[::1])
SENS_TYPE = types.FunctionType(SENS_SIG)
SENS_DIR_TYPE = types.FunctionType(SENS_DIR_SIG)

_FASTMATH = {"contract"}
_QMAX_R = _QMAX[RODAS5P]
_BETA1_R = _BETA1[RODAS5P]
_BETA2_R = _BETA2[RODAS5P]


@njit(cache=True, error_model="numpy", fastmath={"contract", "reassoc"})
def _block_solve_sens(a, blocks, b, kmat, s, n, k):
    """kmat[s, n:] = W^-1 applied to each parameter's part of b[n:] (state-major (n, k)), a as
    left by `numba_solvers._invert_blocks`: the block forward substitution of `_block_solve_row`
    with every row operation an axpy over the k parameters instead of k separate small solves.
    The axpys run on row views indexed from 0, which LLVM vectorises (indexing the flat arrays
    with offsets inside range(lo, hi) loops measured 4x slower). b is overwritten."""
    row = kmat[s]
    for blk in range(blocks.size - 1):
        lo = blocks[blk]
        hi = blocks[blk + 1]
        for i in range(lo, hi):
            bi = b[n + i * k:n + (i + 1) * k]
            for j in range(lo):
                aij = a[i, j]
                xj = row[n + j * k:n + (j + 1) * k]
                for m in range(k):
                    bi[m] -= aij * xj[m]
        for i in range(lo, hi):
            xi = row[n + i * k:n + (i + 1) * k]
            xi[:] = 0.0
            for j in range(lo, hi):
                aij = a[i, j]
                bj = b[n + j * k:n + (j + 1) * k]
                for m in range(k):
                    xi[m] += aij * bj[m]


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _rodas_sens_step(rhs, srhs, sdir, t, h, Y, p, u_in, F0, jmat, dtg, w, piv, blocks, kmat,
                     ytmp, ftmp, cbuf, Y_new, n, k):
    """One Rodas5P step of the augmented system (see the module docstring).

    Y, Y_new, u_in, F0, dtg, ytmp, ftmp (N = n (k + 1),); F0 = F(t, Y), dtg = dF/dt at (t, Y);
    jmat (n, n) = J(t, y); kmat (8, N) receives the stages (kmat[7]: the error estimate);
    cbuf (n k,) scratch. Returns False when W is singular.
    """
    N = Y.size
    inv_hg = 1.0 / (h * _R_GAMMA)
    for i in range(n):
        for j in range(n):
            w[i, j] = -jmat[i, j]
        w[i, i] += inv_hg
    if not _invert_blocks(w, piv, blocks):
        return False
    inv_h = 1.0 / h
    y = Y[:n]
    S = Y[n:]
    for s in range(8):
        hd = h * _R_d[s]
        if s == 0:
            for i in range(N):
                ftmp[i] = F0[i] + hd * dtg[i]
        else:
            for i in range(N):
                ytmp[i] = Y[i]
                ftmp[i] = u_in[i] + hd * dtg[i]
            for j in range(s):
                a = _R_A[s, j]
                c = _R_C[s, j] * inv_h
                for i in range(N):
                    kji = kmat[j, i]
                    ytmp[i] += a * kji
                    ftmp[i] += c * kji
            ts = t + _R_c[s] * h
            rhs(ts, ytmp[:n], p, Y_new[:n])         # Y_new as scratch until the end
            srhs(ts, ytmp[:n], p, ytmp[n:], Y_new[n:])
            for i in range(N):
                ftmp[i] += Y_new[i]
        # y part first: C_m acts on the y part of this stage's solution
        _block_solve_row(w, blocks, ftmp[:n], kmat, s)
        sdir(t, y, p, S, kmat[s, :n], cbuf)
        for i in range(n * k):
            ftmp[n + i] += cbuf[i]
        _block_solve_sens(w, blocks, ftmp, kmat, s, n, k)
    for i in range(N):          # stiffly accurate: y_new = y + sum_j A[7, j] k_j + k_7
        Y_new[i] = ytmp[i] + kmat[7, i]
    return True


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _error_norm(kmat, Y, Y_new, n, rtol, atol, atol_s, sens_error):
    """Scaled error of a step: Hairer's RMS norm over y, and the max of it and each parameter's
    RMS norm over S_m (scale atol_s[m] + rtol |S_m|) when sens_error (as CVODES' errconS)."""
    e = kmat[7]
    err = _rms_norm(e[:n], Y[:n], Y_new[:n], rtol, atol)
    if not sens_error:
        return err
    k = atol_s.size
    for m in range(k):
        acc = 0.0
        for i in range(n):
            q = n + i * k + m
            acc += (e[q] / (atol_s[m] + rtol * max(abs(Y[q]), abs(Y_new[q])))) ** 2
        err = max(err, np.sqrt(acc / n))
    return err


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _apply_sens_events(t, ie, ev_t, ev_state, ev_kind, ev_value, ev_dvalue, n, Y, u_in):
    """Apply every event from index ie with time <= t to Y (y and S) / u_in; next index.

    ev_dvalue (n_ev, k): d value / d p_m of each event."""
    k = ev_dvalue.shape[1]
    while ie < ev_t.size and ev_t[ie] <= t:
        i = ev_state[ie]
        target = Y if ev_kind[ie] == EVENT_BOLUS else u_in
        target[i] += ev_value[ie]
        for m in range(k):
            target[n + i * k + m] += ev_dvalue[ie, m]
        ie += 1
    return ie


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _eval_F(rhs, srhs, t, Y, p, u_in, out, n):
    """out = F(t, Y) + u_in for the augmented system."""
    rhs(t, Y[:n], p, out[:n])
    srhs(t, Y[:n], p, Y[n:], out[n:])
    for i in range(out.size):
        out[i] += u_in[i]


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _integrate_sens(rhs, jac, tgrad, srhs, sdir, stgrad, blocks, y0, s0, p, t0, t_out, ev_t,
                    ev_state, ev_kind, ev_value, ev_dvalue, rtol, atol, atol_s, sens_error,
                    max_steps, h0, y_out):
    """Integrate one trajectory and its sensitivities; y_out (n_out, n (k + 1)) receives the flat
    augmented state at t_out. Returns (status, n_accepted, n_rejected).

    Segments between events, step-size carry-over and restarts follow `numba_solvers._integrator`
    (so that, with sens_error False, y takes exactly the same steps as there).
    """
    n = y0.size
    k = atol_s.size
    N = n * (k + 1)
    n_out = t_out.size
    Y = np.empty(N)
    Y[:n] = y0
    Y[n:] = s0
    p = p.copy()
    Y_new = np.empty(N)
    ytmp = np.empty(N)
    ftmp = np.empty(N)
    F0 = np.empty(N)
    dtg = np.empty(N)
    u_in = np.zeros(N)
    cbuf = np.empty(n * k)
    jmat = np.empty((n, n))
    w = np.empty((n, n))
    piv = np.empty(n, dtype=np.int64)
    kmat = np.empty((8, N))

    t = t0
    h_carry = 0.0
    h_restart = 0.0
    status = STATUS_OK
    n_acc = 0
    n_rej = 0
    ie = 0
    io = 0
    while status == STATUS_OK:
        ie = _apply_sens_events(t, ie, ev_t, ev_state, ev_kind, ev_value, ev_dvalue, n, Y, u_in)
        if not _all_finite(Y):
            status = STATUS_NON_FINITE
            break
        while io < n_out and t_out[io] <= t:
            y_out[io, :] = Y
            io += 1
        if io == n_out:
            break
        t_end = t_out[n_out - 1]
        if ie < ev_t.size and ev_t[ie] < t_end:
            t_end = ev_t[ie]

        _eval_F(rhs, srhs, t, Y, p, u_in, F0, n)
        if h_carry > 0.0:
            h = _restart_step(h_carry, h_restart)
        elif h0 > 0.0:
            h = h0
        else:   # the state's own starting step, as the plain solver picks it
            h = _initial_step(rhs, t, Y[:n], p, u_in[:n], F0[:n], rtol, atol, ytmp[:n], ftmp[:n])
        err_old = 1.0
        last_rejected = False
        err_rej = np.inf
        h_rej = 0.0
        new_point = True
        f_valid = True
        first = h_carry > 0.0
        while t < t_end:
            if new_point:
                if not f_valid:
                    _eval_F(rhs, srhs, t, Y, p, u_in, F0, n)
                if not _all_finite(F0):
                    status = STATUS_NON_FINITE
                    break
                jac(t, Y[:n], p, jmat)
                tgrad(t, Y[:n], p, dtg[:n])
                stgrad(t, Y[:n], p, Y[n:], dtg[n:])
                for i in range(n, N):
                    if not np.isfinite(dtg[i]):
                        dtg[i] = 0.0
                new_point = False
            if n_acc + n_rej >= max_steps:
                status = STATUS_MAX_STEPS
                break
            last = t + 1.01 * h >= t_end
            h_step = t_end - t if last else h
            if _rodas_sens_step(rhs, srhs, sdir, t, h_step, Y, p, u_in, F0, jmat, dtg, w, piv,
                                blocks, kmat, ytmp, ftmp, cbuf, Y_new, n, k):
                err = _error_norm(kmat, Y, Y_new, n, rtol, atol, atol_s, sens_error)
            else:
                err = np.inf
            if err <= 1.0:
                t, io = _advance(True, last, t, t_end, h_step, io, t_out, Y, Y_new, kmat, y_out)
                n_acc += 1
                if not _all_finite(Y):
                    status = STATUS_NON_FINITE
                    break
                new_point = True
                f_valid = False
                h, err_old, h_restart = _after_accept(err, err_old, last_rejected, first, last, h, h_step,
                                                      h_restart, _QMAX_R, _BETA1_R, _BETA2_R)
                last_rejected = False
                first = False
            else:
                n_rej += 1
                h, err_rej, h_rej, underflow = _after_reject(err, last_rejected, err_rej, h_rej,
                                                             h_step, t)
                last_rejected = True
                if underflow:
                    status = STATUS_STEP_UNDERFLOW
                    break
        h_carry = h
    for i in range(io, n_out):
        y_out[i, :] = np.nan
    return status, n_acc, n_rej


_SENS_BATCH_SIG = types.Tuple((float64[:, :, ::1], int64[::1], int64[::1], int64[::1]))(
    RHS_TYPE, JAC_TYPE, TGRAD_TYPE, SENS_TYPE, SENS_DIR_TYPE, SENS_TYPE, int64[::1],
    float64[:, ::1], float64[:, ::1], float64[:, ::1], float64, float64[::1], float64[:, ::1],
    int64[:, ::1], int64[:, ::1], float64[:, ::1], float64[:, :, ::1], float64, float64,
    float64[:, ::1], boolean, int64, float64)


@njit(cache=True, parallel=True, error_model="numpy", fastmath=_FASTMATH)
def solve_sensitivities(rhs, jac, tgrad, srhs, sdir, stgrad, blocks, y0, s0, p, t0, t_out, ev_t,
                        ev_state, ev_kind, ev_value, ev_dvalue, rtol, atol, atol_s, sens_error,
                        max_steps, h0):
    """B trajectories with their sensitivities, in parallel.

    y0 (B, n), s0 (B, n k) (dy0/dp, flat as S), p (B, n_par), t_out (n_out,); ev_* (B, n_ev)
    as in `numba_solvers.solve_batch`, ev_dvalue (B, n_ev, k); atol_s (B, k): absolute tolerance
    of each trajectory's sensitivities to each parameter in the error test, used when sens_error. Returns the flat
    augmented states (B, n_out, n (k + 1)), status, accepted and rejected steps (B,).
    """
    n_traj = y0.shape[0]
    width = y0.shape[1] * (atol_s.shape[1] + 1)
    out = np.empty((n_traj, t_out.size, width))
    status = np.empty(n_traj, dtype=np.int64)
    n_acc = np.empty(n_traj, dtype=np.int64)
    n_rej = np.empty(n_traj, dtype=np.int64)
    for b in prange(n_traj):
        status[b], n_acc[b], n_rej[b] = _integrate_sens(
            rhs, jac, tgrad, srhs, sdir, stgrad, blocks, y0[b], s0[b], p[b], t0, t_out, ev_t[b],
            ev_state[b], ev_kind[b], ev_value[b], ev_dvalue[b], rtol, atol, atol_s[b], sens_error,
            max_steps, h0, out[b])
    return out, status, n_acc, n_rej


_OUT_DERIV_TYPE = types.FunctionType(void(float64, float64[::1], float64[::1], float64[:, ::1]))


@njit(float64[:, :, ::1](_OUT_DERIV_TYPE, _OUT_DERIV_TYPE, float64[::1], float64[:, ::1],
                         float64[:, :, ::1], float64[::1], int64), cache=True, error_model="numpy")
def output_derivatives(outputs_dy, outputs_dp, t_out, y, s, p, n_outputs):
    """d output / d p_m (n_out, n_outputs, k) = O_y S_m + O_p[:, m] at each output time.

    y (n_out, n) kernel coordinates, s (n_out, n, k) their sensitivities, p (n_par,)."""
    n_t, n, k = s.shape
    out = np.zeros((n_t, n_outputs, k))
    oy = np.empty((n_outputs, n))
    op = np.empty((n_outputs, k))
    for it in range(n_t):
        outputs_dy(t_out[it], y[it], p, oy)
        outputs_dp(t_out[it], y[it], p, op)
        for o in range(n_outputs):
            for m in range(k):
                acc = op[o, m]
                for j in range(n):
                    acc += oy[o, j] * s[it, j, m]
                out[it, o, m] = acc
    return out


def sensitivity_entry():
    """`solve_sensitivities`, compiled for its signature on first use (`numba_solvers.compiled`)."""
    return compiled(solve_sensitivities, _SENS_BATCH_SIG)
