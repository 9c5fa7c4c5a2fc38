"""Model-independent adaptive ODE solvers compiled once with numba, with dosing events.

The solvers take the model's kernels (right-hand side, Jacobian, time gradient, the sparse LU
of W, outputs) as first-class functions and have explicit signatures, so numba compiles them
once and caches them on disk for every model; each model only compiles its own small kernels
(see `numba_backend`). The public entry points take the kernels by C address (`KERNELS`,
`kernel_address`): passing numba dispatchers from Python costs ~10 us per function and call.

Kernel conventions (all arrays C-contiguous float64; p is the parameter vector extended by the
model's derived parameters, `numba_backend.solver_kernels`, which the outputs kernel
reads only the first n_par entries of):
    rhs(t, y (n,), p (n_par + n_derived,), dy_out (n,))   dy/dt
    jac(t, y, p, J_out (n, n))                     J[i, j] = d f_i / d y_j (dense)
    tgrad(t, y, p, dt_out (n,))                    d f / dt
    lu_factor(inv_hg, J, scale, w) -> bool         factors of W = inv_hg I - J into w (n, n)
    lu_solve(w, b, c, out)                         out (n,) = W^-1 (b + c) from those factors
jac and tgrad return non-finite partial derivatives as 0 (`numba_backend.solver_kernels`).
The two LU kernels take pointers to the arrays' data (matrices flat in C order). They are
straight-line code for the model's sparsity (`numba_backend.lu_kernel_sources`); lu_factor tests
its pivots in the error weights scale (n,) = atol + rtol |y| and returns False when one is too
small, and the step then inverts W densely with partial pivoting instead (`_invert_blocks`).

Methods (runtime integer, see `METHODS`):
    0  Rodas5P, a stiffly accurate 8-stage Rosenbrock method of order 5 with an embedded
       order-4 estimate and a 4th-order dense output (Steinebach, "Construction of
       Rosenbrock-Wanner method Rodas5P and numerical benchmarks within the Julia Differential
       Equations package", BIT Numer. Math. 63, 27 (2023)). Uses the analytic Jacobian and tgrad.
    1  Tsit5, the explicit 5(4) Runge-Kutta pair of Tsitouras ("Runge-Kutta pairs of order 5(4)
       satisfying only the first column simplifying assumption", Comput. Math. Appl. 62, 770
       (2011)) with its 4th-order continuous extension.
Coefficients are as published (float64 values as tabulated in OrdinaryDiffEq.jl).

Dosing events (per trajectory, sorted by time, padded with +inf): the solver integrates exactly
up to each event time, then applies every event at that time. Kind `EVENT_BOLUS` adds `value`
to `y[state]`; kind `EVENT_RATE` adds `value` to the input rate `u[state]`, a piecewise-constant
vector added to the right-hand side (a zero-order infusion is +rate at its start and -rate at
its end). Outputs are right-continuous: an output at an event time reports the post-event state.

Scans and progression (for trials whose treatment continues until progression): scan times
`scan_t` (n_scan,), sorted, shared by the batch or one row per trajectory (each patient's
visit days), are also segment ends. At each scan, before the events at that time, the solver
evaluates the model's outputs kernel
`outputs(t, y, p, out (n_outputs,))` and records `out[burden_index]` (the tumour burden, e.g. the
sum of lesion diameters in mm). The first scan is the baseline; the nadir is the smallest value
at earlier scans, baseline included. Progression (RECIST 1.1, `progression`) is the first scan
with value >= (1 + pd_rel) * nadir and value - nadir >= pd_abs; from then on every event with
`ev_guard >= pd_time` is skipped (ev_guard: the start time of the dose an event belongs to for
treatment given until progression, -inf for events always applied). Treatment beyond progression
has its own guard: the progression is confirmed (iRECIST, `confirmed_progression`) at the first
later scan whose value exceeds the value at progression by cpd_abs or more, and from then on
every event with `ev_guard_c >= cpd_time` is skipped (ev_guard_c: the dose's start time for
treatment given until confirmed progression, else -inf). Integration goes on after progression,
untreated by those drugs.
"""

from __future__ import annotations

import logging
import threading
import warnings

import numpy as np
from numba import boolean, float64, int64, njit, prange, types, void
from numba.core import cgutils
from numba.core.errors import NumbaExperimentalFeatureWarning
from numba.experimental.function_type import _get_wrapper_address
from numba.extending import intrinsic

RHS_SIG = void(float64, float64[::1], float64[::1], float64[::1])
JAC_SIG = void(float64, float64[::1], float64[::1], float64[:, ::1])
TGRAD_SIG = RHS_SIG
RHS_TYPE = types.FunctionType(RHS_SIG)
JAC_TYPE = types.FunctionType(JAC_SIG)
TGRAD_TYPE = types.FunctionType(TGRAD_SIG)
OUTPUT_SIG = void(float64, float64[::1], float64[::1], float64[::1])  # outputs(t, y, p, out)
OUTPUT_TYPE = types.FunctionType(OUTPUT_SIG)
# The sparse LU kernels take raw pointers (n x n matrices flat in C order): numba compiles a
# pointer access ~3x faster than an array access, and these kernels are long straight-line code.
_F64P = types.CPointer(float64)
LU_FACTOR_SIG = boolean(float64, _F64P, _F64P, _F64P)      # (inv_hg, J, scale, w)
LU_SOLVE_SIG = void(_F64P, _F64P, _F64P, _F64P)            # (w, b, c, out)
LU_FACTOR_TYPE = types.FunctionType(LU_FACTOR_SIG)
LU_SOLVE_TYPE = types.FunctionType(LU_SOLVE_SIG)

# Only contraction of a * b + c into one fused multiply-add: no flag that assumes finite values
# (status detection relies on NaN/inf propagating) and no reassociation.
_FASTMATH = {"contract"}

RODAS5P = 0
TSIT5 = 1
METHODS = {"rodas5p": RODAS5P, "tsit5": TSIT5}

EVENT_BOLUS = 0
EVENT_RATE = 1

STATUS_OK = 0
STATUS_MAX_STEPS = 1
STATUS_NON_FINITE = 2
STATUS_STEP_UNDERFLOW = 3
STATUS_NAMES = {STATUS_OK: "ok", STATUS_MAX_STEPS: "max_steps exceeded",
                STATUS_NON_FINITE: "non-finite state or derivative",
                STATUS_STEP_UNDERFLOW: "step size underflow"}

# ---- step-size control -------------------------------------------------------------------
_SAFETY = 0.9
_QMIN = 0.2                      # largest shrink factor 1/5
_QMAX = np.array([6.0, 10.0])    # largest growth factor per method (Rodas5P, Tsit5)
_ORDER = 5.0                     # both embedded estimates are of order 4: exponent 1/5
# Step-size factor fac = SAFETY err^-BETA1 err_old^BETA2 per method (Rodas5P, Tsit5): the
# elementary controller for Rodas5P (the PI memory only slows its growth between doses: ~10%
# more steps), the PI controller of Hairer, Norsett & Wanner I, II.4 for Tsit5 (an explicit
# method near its stability limit oscillates without it: ~10x more rejections).
_BETA2 = np.array([0.0, 0.04])
_BETA1 = 1.0 / _ORDER - 0.75 * _BETA2
_ERR_FLOOR = 1e-4                # lower bound of the remembered error (PI memory)
_HMIN_REL = 1e-14                # step underflow: h < 1e-14 * max(1, |t|)

# ---- Rodas5P (Steinebach 2023) ------------------------------------------------------------
# Stage i solves (I/(h*gamma) - J) k_i = f(t + c_i h, y + sum_j A_ij k_j)
#                                        + sum_j (C_ij / h) k_j + h d_i df/dt,
# y_new = y + sum_j B_j k_j with B = A[7] + e_7; the last stage k_7 is the error estimate.
_R_GAMMA = 0.21193756319429014
_r_a6 = [-7.502846399306121, 2.561846144803919, -11.627539656261098,
         -0.18268767659942256, 0.030198172008377946]
_R_A = np.zeros((8, 8))
_R_A[1, :1] = [3.0]
_R_A[2, :2] = [2.849394379747939, 0.45842242204463923]
_R_A[3, :3] = [-6.954028509809101, 2.489845061869568, -10.358996098473584]
_R_A[4, :4] = [2.8029986275628964, 0.5072464736228206, -0.3988312541770524,
               -0.04721187230404641]
_R_A[5, :5] = _r_a6
_R_A[6, :6] = [*_r_a6, 1.0]
_R_A[7, :7] = [*_r_a6, 1.0, 1.0]
_R_B = np.array([*_r_a6, 1.0, 1.0, 1.0])
_R_C = np.zeros((8, 8))
_R_C[1, :1] = [-14.155112264123755]
_R_C[2, :2] = [-17.97296035885952, -2.859693295451294]
_R_C[3, :3] = [147.12150275711716, -1.41221402718213, 71.68940251302358]
_R_C[4, :4] = [165.43517024871676, -0.4592823456491126, 42.90938336958603,
               -5.961986721573306]
_R_C[5, :5] = [24.854864614690072, -3.0009227002832186, 47.4931110020768,
               5.5814197821558125, -0.6610691825249471]
_R_C[6, :6] = [30.91273214028599, -3.1208243349937974, 77.79954646070892,
               34.28646028294783, -19.097331116725623, -28.087943162872662]
_R_C[7, :7] = [37.80277123390563, -3.2571969029072276, 112.26918849496327,
               66.9347231244047, -40.06618937091002, -54.66780262877968, -9.48861652309627]
_R_c = np.array([0.0, 0.6358126895828704, 0.4095798393397535, 0.9769306725060716,
                 0.4288403609558664, 1.0, 1.0, 1.0])
_R_d = np.array([0.21193756319429014, -0.42387512638858027, -0.3384627126235924,
                 1.8046452872882734, 2.325825639765069, 0.0, 0.0, 0.0])
# Dense output: q_m = sum_j H[m, j] k_j and, with s = 1 - theta,
# y(t + theta h) = s y + theta (y_new + s (q_0 + theta (q_1 + theta q_2))).
_R_H = np.array([
    [25.948786856663858, -2.5579724845846235, 10.433815404888879, -2.3679251022685204,
     0.524948541321073, 1.1241088310450404, 0.4272876194431874, -0.17202221070155493],
    [-9.91568850695171, -0.9689944594115154, 3.0438037242978453, -24.495224566215796,
     20.176138334709044, 15.98066361424651, -6.789040303419874, -6.710236069923372],
    [11.419903575922262, 2.8879645146136994, 72.92137995996029, 80.12511834622643,
     -52.072871366152654, -59.78993625266729, -0.15582684282751913, 4.883087185713722],
])

# ---- Tsit5 (Tsitouras 2011) ---------------------------------------------------------------
# k_i = f(t + c_i h, y + h sum_j A_ij k_j); A[6] holds the weights b (FSAL: k_6 = f(t+h, y_new));
# error = h sum_j E_j k_j; dense: y(t + theta h) = y + h sum_j (sum_m R[j, m] theta^(m+1)) k_j.
_T_c = np.array([0.0, 0.161, 0.327, 0.9, 0.9800255409045097, 1.0, 1.0])
_T_A = np.zeros((7, 7))
_T_A[1, :1] = [0.161]
_T_A[2, :2] = [-0.008480655492356989, 0.335480655492357]
_T_A[3, :3] = [2.8971530571054935, -6.359448489975075, 4.3622954328695815]
_T_A[4, :4] = [5.325864828439257, -11.748883564062828, 7.4955393428898365,
               -0.09249506636175525]
_T_A[5, :5] = [5.86145544294642, -12.92096931784711, 8.159367898576159, -0.071584973281401,
               -0.028269050394068383]
_T_A[6, :6] = [0.09646076681806523, 0.01, 0.4798896504144996, 1.379008574103742,
               -3.290069515436081, 2.324710524099774]
_T_E = np.array([-0.00178001105222577714, -0.0008164344596567469, 0.007880878010261995,
                 -0.1447110071732629, 0.5823571654525552, -0.45808210592918697,
                 0.015151515151515152])
_T_R = np.array([
    [1.0, -2.763706197274826, 2.9132554618219126, -1.0530884977290216],
    [0.0, 0.13169999999999998, -0.2234, 0.1017],
    [0.0, 3.9302962368947516, -5.941033872131505, 2.490627285651253],
    [0.0, -12.411077166933676, 30.33818863028232, -16.548102889244902],
    [0.0, 37.50931341651104, -88.1789048947664, 47.37952196281928],
    [0.0, -27.896526289197286, 65.09189467479366, -34.87065786149661],
    [0.0, 1.5, -4.0, 2.5],
])


# ---- small dense linear algebra -------------------------------------------------------------
# W = I/(h gamma) - J is inverted after every step-size change. Models have ~10 states, so a
# hand-written in-place inversion is faster than calling LAPACK (call overhead, workspace
# queries) and allocates nothing inside the step loop. An explicit inverse rather than LU
# solves: the 8 stage solves of a step are sequential and a triangular solve is a chain of
# dependent loads and stores, whereas W^-1 b is independent dot products; the Gauss-Jordan
# elimination itself is unit-stride row operations that pipeline well.
@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _invert_blocks(a, piv, blocks):
    """Invert in place the diagonal blocks of a block-lower-triangular a (n, n).

    blocks (m + 1,): block starts, then n; entries above the diagonal blocks are zero. Each block
    is inverted by Gauss-Jordan elimination with partial pivoting within it (piv receives the row
    swaps); the blocks below the diagonal are left as they are, for `_block_solve_row`. Cost
    sum(block^3) instead of n^3: the PK compartments of a composed model form their own small
    blocks. Returns False (a destroyed) if a block is singular.
    """
    for b in range(blocks.size - 1):
        lo = blocks[b]
        hi = blocks[b + 1]
        for k in range(lo, hi):
            p = k
            amax = abs(a[k, k])
            for i in range(k + 1, hi):
                if abs(a[i, k]) > amax:
                    amax = abs(a[i, k])
                    p = i
            piv[k] = p
            if amax == 0.0:
                return False
            if p != k:
                for j in range(lo, hi):
                    a[k, j], a[p, j] = a[p, j], a[k, j]
            inv = 1.0 / a[k, k]
            a[k, k] = 1.0
            for j in range(lo, hi):
                a[k, j] *= inv
            for i in range(lo, hi):
                if i != k:
                    f = a[i, k]
                    if f != 0.0:    # Jacobians of reaction networks are sparse
                        a[i, k] = 0.0
                        for j in range(lo, hi):
                            a[i, j] -= f * a[k, j]
        for k in range(hi - 1, lo - 1, -1):     # row swaps of a are column swaps of its inverse
            p = piv[k]
            if p != k:
                for i in range(lo, hi):
                    a[i, k], a[i, p] = a[i, p], a[i, k]
    return True


@njit(cache=True, error_model="numpy", fastmath={"contract", "reassoc"})
def _block_solve_row(a, blocks, b, out, r):
    """out[r] = W^-1 b by block forward substitution, a as left by `_invert_blocks`.

    b (n,) is overwritten. Reassociation (only here) lets each dot product be summed in SIMD
    lanes; it does not assume finite values, so NaN/inf still propagate to the status checks.
    """
    for blk in range(blocks.size - 1):
        lo = blocks[blk]
        hi = blocks[blk + 1]
        for i in range(lo, hi):             # b_i - sum over earlier blocks of W_ij x_j
            acc = b[i]
            for j in range(lo):
                acc -= a[i, j] * out[r, j]
            b[i] = acc
        for i in range(lo, hi):
            acc = 0.0
            for j in range(lo, hi):
                acc += a[i, j] * b[j]
            out[r, i] = acc


@intrinsic
def _data_pointer(typingctx, arr, offset):
    """Pointer to element `offset` (flat, C order) of a C-contiguous float64 array, for the LU
    kernels. Hand-written: numba has no public way to take an array's data pointer as a
    typed pointer in compiled code."""
    if not (isinstance(arr, types.Array) and arr.dtype == float64 and arr.layout == "C"
            and isinstance(offset, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.gep(data, [context.cast(builder, args[1], signature.args[1], types.intp)])
    return _F64P(arr, offset), codegen


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _factor_w(lu_factor, inv_hg, jmat, scale, w, piv, blocks):
    """Factorise W = inv_hg I - J into w: 1 by the model's sparse LU (`lu_factor`, pivots tested
    in the error weights `scale`), else 0 by dense inversion of its diagonal blocks with
    partial pivoting (`_invert_blocks`); -1 when W is singular."""
    if lu_factor(inv_hg, _data_pointer(jmat, 0), _data_pointer(scale, 0), _data_pointer(w, 0)):
        return 1
    n = jmat.shape[0]
    for i in range(n):
        for j in range(n):
            w[i, j] = -jmat[i, j]
        w[i, i] += inv_hg
    return 0 if _invert_blocks(w, piv, blocks) else -1


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _solve_w(lu_solve, sparse, w, blocks, b, c, out, r):
    """out[r] = W^-1 (b + c) with w as `_factor_w` left it (sparse: its return value was 1); b
    may be overwritten. The sum is formed inside the sparse solve, from scalar loads: b was
    just written element by element (the right-hand side), and a vector load of it would stall
    on store forwarding."""
    if sparse:
        lu_solve(_data_pointer(w, 0), _data_pointer(b, 0), _data_pointer(c, 0),
                 _data_pointer(out, r * out.shape[1]))
    else:
        for i in range(b.size):
            b[i] += c[i]
        _block_solve_row(w, blocks, b, out, r)


# ---- helpers ----------------------------------------------------------------------------------
@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _eval_f(rhs, t, y, p, u_in, out):
    """out = rhs(t, y, p) + u_in (the current infusion rates)."""
    rhs(t, y, p, out)
    for i in range(out.size):
        out[i] += u_in[i]


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _axpy_row(a, x, r, y):
    """y += a * x[r] for row r of x (m, n) (by index: a row slice costs reference-count updates)."""
    for i in range(y.size):
        y[i] += a * x[r, i]


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _copy_into_row(v, out, r):
    """out[r] = v for out (m, n) (by index: slice assignment needs numba's runtime)."""
    for i in range(v.size):
        out[r, i] = v[i]


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _all_finite(v):
    """True if no entry of v is NaN or infinite."""
    for i in range(v.size):
        if not np.isfinite(v[i]):
            return False
    return True


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _rms_norm(e, y_old, y_new, rtol, atol):
    """Hairer's RMS norm of e with scale atol + rtol * max(|y_old|, |y_new|)."""
    acc = 0.0
    for i in range(e.size):
        sc = atol + rtol * max(abs(y_old[i]), abs(y_new[i]))
        acc += (e[i] / sc) ** 2
    return np.sqrt(acc / e.size)


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _initial_step(rhs, t, y, p, u_in, f0, rtol, atol, y1, f1):
    """Hairer's starting step (Hairer, Norsett & Wanner I, II.4) for order-5 methods [time]."""
    d0 = _rms_norm(y, y, y, rtol, atol)
    d1 = _rms_norm(f0, y, y, rtol, atol)
    h0 = 0.01 * d0 / d1 if (d0 >= 1e-5 and d1 >= 1e-5) else 1e-6
    for i in range(y.size):
        y1[i] = y[i] + h0 * f0[i]
    _eval_f(rhs, t + h0, y1, p, u_in, f1)
    for i in range(y.size):
        f1[i] -= f0[i]
    d2 = _rms_norm(f1, y, y, rtol, atol) / h0
    dmax = max(d1, d2)
    h1 = max(1e-6, h0 * 1e-3) if dmax <= 1e-15 else (0.01 / dmax) ** (1.0 / (_ORDER + 1.0))
    return min(100.0 * h0, h1)


# ---- one step of each method ----------------------------------------------------------------
@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _rodas_step(rhs, lu_factor, lu_solve, t, h, y, p, u_in, f0, jmat, dtg, scale, w, piv, blocks,
                k, ytmp, ftmp, y_new):
    """Rodas5P step of size h from (t, y): stages into k (8, n), solution into y_new.

    f0, jmat, dtg: f, Jacobian and df/dt at (t, y); scale: error weights atol + rtol |y| (for
    the pivot test of the sparse LU). k[7] is the local error estimate.
    w (n, n) receives W factorised (`_factor_w`; blocks: see `_invert_blocks`).
    Returns False (nothing computed) when W is singular.
    """
    n = y.size
    mode = _factor_w(lu_factor, 1.0 / (h * _R_GAMMA), jmat, scale, w, piv, blocks)
    if mode < 0:
        return False
    sparse = mode == 1
    inv_h = 1.0 / h
    for i in range(n):
        ftmp[i] = f0[i]
        y_new[i] = h * _R_d[0] * dtg[i]
    _solve_w(lu_solve, sparse, w, blocks, ftmp, y_new, k, 0)
    # Stage s: ytmp = y + sum_j A[s, j] k_j and (in y_new, free until the end) the linear part
    # u_in + h d_s df/dt + sum_j (C[s, j] / h) k_j, both in one pass over the earlier stages.
    for s in range(1, 8):
        hd = h * _R_d[s]
        for i in range(n):
            y_new[i] = u_in[i] + hd * dtg[i]
        if s < 6:
            for i in range(n):
                ytmp[i] = y[i]
            for j in range(s):
                a = _R_A[s, j]
                c = _R_C[s, j] * inv_h
                for i in range(n):
                    kji = k[j, i]
                    ytmp[i] += a * kji
                    y_new[i] += c * kji
        else:                   # A[6] = A[5] + e_5, A[7] = A[6] + e_6
            for i in range(n):
                ytmp[i] += k[s - 1, i]
            for j in range(s):
                c = _R_C[s, j] * inv_h
                for i in range(n):
                    y_new[i] += c * k[j, i]
        rhs(t + _R_c[s] * h, ytmp, p, ftmp)
        _solve_w(lu_solve, sparse, w, blocks, ftmp, y_new, k, s)     # k_s = W^-1 (ftmp + y_new)
    for i in range(n):          # stiffly accurate: B = A[7] + e_7
        y_new[i] = ytmp[i] + k[7, i]
    return True


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _rodas_dense_coeffs(k, q):
    """Rodas5P interpolation vectors q (3, n) = H @ k of an accepted step."""
    for m in range(3):
        for i in range(k.shape[1]):
            acc = 0.0
            for j in range(8):
                acc += _R_H[m, j] * k[j, i]
            q[m, i] = acc


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _rodas_dense(theta, y, y_new, q, out):
    """Rodas5P 4th-order interpolant at t + theta h from `_rodas_dense_coeffs`' q."""
    s = 1.0 - theta
    for i in range(y.size):
        out[i] = s * y[i] + theta * (y_new[i] + s * (q[0, i] + theta * (q[1, i] + theta * q[2, i])))


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _rodas_dense_row(theta, y, y_new, k, out, r):
    """`_rodas_dense` straight from the stages k into row r of out (m, n), without q.

    y(t + theta h) = s y + theta y_new + sum_j w_j k_j, w_j = theta s (H0j + theta (H1j +
    theta H2j)): 8 n multiply-adds per output instead of 24 n per step for q plus 4 n per
    output, cheaper while outputs are sparser than steps.
    """
    s = 1.0 - theta
    n = y.size
    for i in range(n):
        out[r, i] = s * y[i] + theta * y_new[i]
    ts = theta * s
    for j in range(8):
        wj = ts * (_R_H[0, j] + theta * (_R_H[1, j] + theta * _R_H[2, j]))
        for i in range(n):
            out[r, i] += wj * k[j, i]


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _tsit5_step(rhs, t, h, y, p, u_in, k, err_vec, y_new):
    """Tsit5 step of size h from (t, y); k[0] = f(t, y) on entry, k[6] = f(t + h, y_new) on exit."""
    for s in range(1, 7):
        for i in range(y.size):
            y_new[i] = y[i]
        for j in range(s):
            _axpy_row(h * _T_A[s, j], k, j, y_new)
        _eval_f(rhs, t + _T_c[s] * h, y_new, p, u_in, k[s])
    for i in range(y.size):
        err_vec[i] = 0.0
    for j in range(7):
        _axpy_row(h * _T_E[j], k, j, err_vec)


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _tsit5_dense(theta, h, y, k, out):
    """Tsit5 continuous extension at t + theta h."""
    for i in range(y.size):
        out[i] = y[i]
    for j in range(7):
        bj = theta * (_T_R[j, 0] + theta * (_T_R[j, 1] + theta * (_T_R[j, 2] + theta * _T_R[j, 3])))
        _axpy_row(h * bj, k, j, out)


# ---- one trajectory ---------------------------------------------------------------------------
@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _apply_events(t, ie, ev_t, ev_state, ev_kind, ev_value, ev_guard, ev_guard_c, pd_time,
                  cpd_time, y, u_in):
    """Apply every event from index ie with time <= t to y / u_in, skipping those guarded by a
    progression at pd_time (ev_guard >= pd_time) or by a confirmed progression at cpd_time
    (ev_guard_c >= cpd_time); returns the next index."""
    while ie < ev_t.size and ev_t[ie] <= t:
        if ev_guard[ie] >= pd_time or ev_guard_c[ie] >= cpd_time:
            pass
        elif ev_kind[ie] == EVENT_BOLUS:
            y[ev_state[ie]] += ev_value[ie]
        else:
            u_in[ev_state[ie]] += ev_value[ie]
        ie += 1
    return ie


def progression(sld, nadir, pd_rel=0.2, pd_abs=5.0):
    """RECIST 1.1 progression: sld >= (1 + pd_rel) * nadir and sld - nadir >= pd_abs (both in mm).

    The one definition of PD, used by the kernels' scans and by the Python readout
    (`trials.recist`): works on floats or numpy arrays, and compiled by numba. NaN gives False.
    """
    return (sld >= (1.0 + pd_rel) * nadir) & (sld - nadir >= pd_abs)


def confirmed_progression(sld, sld_at_pd, cpd_abs=5.0):
    """iRECIST confirmation of a progression (Seymour L et al. iRECIST. Lancet Oncol
    2017;18:e143-e152): at an assessment after the unconfirmed progression (iUPD), the sum of
    target diameters has grown by at least cpd_abs mm (iRECIST: 5 mm) over its value at iUPD.

    Shared by the kernels and the trial readout, like `progression`. NaN gives False.
    """
    return sld - sld_at_pd >= cpd_abs


_progression = njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")(progression)
_confirmed = njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")(confirmed_progression)


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _scan(outputs, t, y, p, out_buf, burden_index, s, scan_value, nadir, pd_time, pd_value,
          cpd_time, pd_rel, pd_abs, cpd_abs):
    """Record scan s at time t; returns the updated (nadir, pd_time, pd_value, cpd_time) by the
    rules of the module docstring (progression needs both the relative and the absolute increase
    over the nadir; its confirmation a later scan cpd_abs above pd_value, the value at it)."""
    outputs(t, y, p, out_buf)
    value = out_buf[burden_index]
    scan_value[s] = value
    if s > 0:
        if pd_time == np.inf:
            if _progression(value, nadir, pd_rel, pd_abs):
                pd_time = t
                pd_value = value
        elif cpd_time == np.inf and _confirmed(value, pd_value, cpd_abs):
            cpd_time = t
    return min(nadir, value), pd_time, pd_value, cpd_time


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _dense_outputs(rodas, t, h, t_new, io, t_out, y, y_new, k, y_out):
    """Write outputs with t_out in [t, t_new) by dense output of the accepted step; next index."""
    while io < t_out.size and t_out[io] < t_new:
        theta = (t_out[io] - t) / h
        if rodas:
            _rodas_dense_row(theta, y, y_new, k, y_out, io)
        else:
            _tsit5_dense(theta, h, y, k, y_out[io])
        io += 1
    return io


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _accept_factor(err, err_old, last_rejected, qmax, beta1, beta2):
    """PI step-size factor after an accepted step (no growth right after a rejection)."""
    fac = _SAFETY * max(err, 1e-10) ** (-beta1) * err_old ** beta2
    return min(1.0 if last_rejected else qmax, max(_QMIN, fac))


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _after_accept(err, err_old, last_rejected, first, last, h, h_step, h_restart, qmax, beta1, beta2):
    """Controller state after an accepted step of size h_step: (next step size, remembered error,
    h_restart). A step cut short at a segment end (`last`) keeps the proposed h if larger; the
    first step after an event records the step it could have been (elementary controller) as
    h_restart, the cap of the first step after the next event."""
    h_next = h_step * _accept_factor(err, err_old, last_rejected, qmax, beta1, beta2)
    if first and not last:
        h_restart = h_step * min(qmax, _SAFETY * max(err, 1e-10) ** (-1.0 / _ORDER))
    return (max(h, h_next) if last else h_next), max(err, _ERR_FLOOR), h_restart


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
def _reject_factor(err, last_rejected, err_prev, h_prev, h):
    """Step-size factor after a rejected step (largest shrink if err is not finite).

    After two rejections in a row (err_prev at h_prev, then err at h) the error is assumed to
    scale as h^q with the observed q (between 1 and the order): right after a dose the step is
    far from the asymptotic regime and the error falls much more slowly than h^5, so shrinking
    by the asymptotic rule alone takes ~5 rejections. Smaller steps bring the error closer to
    h^5 behaviour, so the observed q is a conservative guess.
    """
    if not np.isfinite(err):
        return _QMIN
    expo = 1.0 / _ORDER
    if last_rejected and np.isfinite(err_prev) and err_prev > err and h_prev > h:
        q = np.log(err_prev / err) / np.log(h_prev / h)
        expo = 1.0 / min(_ORDER, max(1.0, q))
    return max(_QMIN, _SAFETY * err ** (-expo))


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _after_reject(err, last_rejected, err_rej, h_rej, h_step, t):
    """Controller state after a rejected step of size h_step with error err: (next step size,
    remembered rejected error and size, underflow: the next step is below the smallest
    representable progress at t)."""
    h = h_step * _reject_factor(err, last_rejected, err_rej, h_rej, h_step)
    return h, err, h_step, h < _HMIN_REL * max(1.0, abs(t))


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _advance(rodas, last, t, t_end, h_step, io, t_out, y, y_new, k, y_out):
    """Take an accepted step: outputs in [t, t_new) by dense output, y = y_new; returns (t_new,
    next output index). A step cut at the segment end (`last`) lands exactly on t_end."""
    t_new = t_end if last else t + h_step
    io = _dense_outputs(rodas, t, h_step, t_new, io, t_out, y, y_new, k, y_out)
    for i in range(y.size):
        y[i] = y_new[i]
    return t_new, io


@njit(cache=True, error_model="numpy", fastmath=_FASTMATH, inline="always")
def _restart_step(h_carry, h_restart):
    """First step after an event: the carried step size, capped by the first accepted step after
    the previous event (see `_integrate`); 0 before the first segment."""
    return min(h_carry, h_restart) if h_restart > 0.0 else h_carry


@njit(cache=True, error_model="numpy")
def _workspace(n, n_outputs):
    """Scratch arrays of one trajectory for `_integrate`: vectors (9, n), matrices (2, n, n),
    pivots (n,), stages (8, n), outputs buffer (n_outputs,)."""
    return (np.empty((9, n)), np.empty((2, n, n)), np.empty(n, dtype=np.int64), np.empty((8, n)),
            np.empty(n_outputs))


def _integrator(rodas: bool):
    """`_integrate` for one method: Rodas5P (`rodas`) or Tsit5. `rodas` is a constant of the
    closure, so numba drops the other method's branches before typing them (Rodas5P's
    solve_single after installing: 8.0 s instead of 8.7 s with both methods)."""

    @njit(cache=True, error_model="numpy", fastmath=_FASTMATH, _nrt=False)
    def _integrate(rhs, jac, tgrad, lu_factor, lu_solve, outputs, blocks, y0, p, t0, t_out, ev_t,
                   ev_state, ev_kind, ev_value, ev_guard, ev_guard_c, scan_t, burden_index, pd_rel,
                   pd_abs, cpd_abs, rtol, atol, method, max_steps, h0, y_out, scan_value, vectors,
                   matrices, piv, k, out_buf):
        """Integrate one trajectory, writing y_out (n_out, n) and scan_value (n_scan,); returns
        (status, n_accepted, n_rejected, pd_time) with pd_time = +inf without progression.
        blocks: the block-lower-triangular structure of the Jacobian (see `_invert_blocks`).

        The time axis is cut into segments at event and scan times; each segment is integrated
        exactly to its end, scans are read and events applied there and the method restarts (f
        re-evaluated, the step size carried over). max_steps bounds step attempts (accepted +
        rejected). After a failure the remaining outputs and scans are NaN.

        vectors, matrices, piv, k, out_buf: scratch arrays from `_workspace`. Compiled without
        numba's runtime (`_nrt=False`), so it cannot allocate: with it, every inlined helper call
        in the step loop increments and decrements (atomically) the reference count of each array
        it is passed, ~30 pairs per step and 16 % of a trajectory's time (measured with perf).
        """
        n = y0.size
        n_out = t_out.size
        y = vectors[0]
        y_new = vectors[1]
        ytmp = vectors[2]
        ftmp = vectors[3]
        f0 = vectors[4]         # f(t, y) (Rodas5P; Tsit5 keeps it in k[0])
        err_vec = vectors[5]
        dtg = vectors[6]
        scale = vectors[7]      # error weights at (t, y), for the sparse LU's pivot test
        u_in = vectors[8]
        for i in range(n):
            y[i] = y0[i]
            u_in[i] = 0.0   # infusion rates
        jmat = matrices[0]
        w = matrices[1]
        qmax = _QMAX[method]
        beta1 = _BETA1[method]
        beta2 = _BETA2[method]

        t = t0
        h_carry = 0.0
        h_restart = 0.0         # first accepted step after the last event (0: none yet)
        status = STATUS_OK
        n_acc = 0
        n_rej = 0
        ie = 0
        io = 0
        n_scan = scan_t.size
        i_scan = 0
        nadir = np.inf
        pd_time = np.inf
        pd_value = np.inf
        cpd_time = np.inf
        while status == STATUS_OK:
            while i_scan < n_scan and scan_t[i_scan] <= t:
                nadir, pd_time, pd_value, cpd_time = _scan(
                    outputs, t, y, p, out_buf, burden_index, i_scan, scan_value, nadir, pd_time,
                    pd_value, cpd_time, pd_rel, pd_abs, cpd_abs)
                i_scan += 1
            ie = _apply_events(t, ie, ev_t, ev_state, ev_kind, ev_value, ev_guard, ev_guard_c,
                               pd_time, cpd_time, y, u_in)
            if not _all_finite(y):
                status = STATUS_NON_FINITE
                break
            while io < n_out and t_out[io] <= t:
                _copy_into_row(y, y_out, io)
                io += 1
            if io == n_out:
                break
            t_end = t_out[n_out - 1]
            if ie < ev_t.size and ev_t[ie] < t_end:
                t_end = ev_t[ie]
            if i_scan < n_scan and scan_t[i_scan] < t_end:
                t_end = scan_t[i_scan]

            # restart at (t, y): fresh f and controller memory. The step size carries over from the
            # last segment (a dose changes few states; re-estimating from scratch costs ~15 steps
            # per dose), capped by the first accepted step after the previous event: repeated doses
            # cause the same transient, and starting with the long step of a smooth stretch costs
            # ~3 rejections per dose. The first segment uses h0 or Hairer's starting-step heuristic.
            _eval_f(rhs, t, y, p, u_in, f0)
            _copy_into_row(f0, k, 0)
            if h_carry > 0.0:
                h = _restart_step(h_carry, h_restart)
            else:
                h = (_initial_step(rhs, t, y, p, u_in, f0, rtol, atol, ytmp, ftmp) if h0 <= 0.0
                     else h0)
            err_old = 1.0
            last_rejected = False
            err_rej = np.inf        # error and size of the last rejected step
            h_rej = 0.0
            new_point = True
            f_valid = True
            first = h_carry > 0.0   # the first accepted step after an event is yet to come
            while t < t_end:
                if new_point:
                    if not f_valid:     # Rodas5P only: Tsit5 has f(t, y) in k[0] (FSAL)
                        _eval_f(rhs, t, y, p, u_in, f0)
                    if not _all_finite(f0 if rodas else k[0]):
                        status = STATUS_NON_FINITE
                        break
                    if rodas:
                        jac(t, y, p, jmat)
                        tgrad(t, y, p, dtg)
                        for i in range(n):
                            scale[i] = atol + rtol * abs(y[i])
                    new_point = False
                if n_acc + n_rej >= max_steps:
                    status = STATUS_MAX_STEPS
                    break
                last = t + 1.01 * h >= t_end
                h_step = t_end - t if last else h
                # the step attempt (not a helper: numba inlines by copying the IR, and a level of
                # inlining around `_rodas_step` cost ~1.8 s of the first compile after installing)
                if not rodas:
                    _tsit5_step(rhs, t, h_step, y, p, u_in, k, err_vec, y_new)
                    err = _rms_norm(err_vec, y, y_new, rtol, atol)
                elif _rodas_step(rhs, lu_factor, lu_solve, t, h_step, y, p, u_in, f0, jmat, dtg,
                                 scale, w, piv, blocks, k, ytmp, ftmp, y_new):
                    err = _rms_norm(k[7], y, y_new, rtol, atol)
                else:
                    err = np.inf        # W singular
                if err <= 1.0:
                    t, io = _advance(rodas, last, t, t_end, h_step, io, t_out, y, y_new, k, y_out)
                    n_acc += 1
                    if not _all_finite(y):
                        status = STATUS_NON_FINITE
                        break
                    if not rodas:
                        _copy_into_row(k[6], k, 0)      # FSAL
                    new_point = True
                    f_valid = not rodas
                    h, err_old, h_restart = _after_accept(err, err_old, last_rejected, first, last,
                                                          h, h_step, h_restart, qmax, beta1, beta2)
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
            for j in range(n):
                y_out[i, j] = np.nan
        for s in range(i_scan, n_scan):
            scan_value[s] = np.nan
        return status, n_acc, n_rej, pd_time

    return _integrate


_integrate_rodas5p = _integrator(True)
_integrate_tsit5 = _integrator(False)


# ---- kernels passed by address -----------------------------------------------------------------
# A numba dispatcher passed from Python as a first-class function argument is typed and its
# address looked up again on every call (~10 us per function through numba's Python layer: ~60 us
# for the six kernels of a solve, a quarter of a 0.25 ms trajectory). The entry points therefore
# take the kernels' C addresses (int64, looked up once per model by `kernel_address`) and turn
# them back into first-class functions inside compiled code, by hand: numba has no public API
# for a function from an address.
def kernel_address(dispatcher, sig) -> int:
    """C address of the compiled kernel `dispatcher` for signature `sig` (valid while it lives)."""
    return _get_wrapper_address(dispatcher, sig)


def _function_from_address(sig):
    """An intrinsic: int64 address (`kernel_address`) -> first-class function of signature sig.

    Fills the C-address member of numba's first-class function value (the others stay null, so
    calls go through the kernel's C wrapper, as for a function object passed from Python)."""
    fnty = types.FunctionType(sig)

    @intrinsic
    def as_function(typingctx, address):
        def codegen(context, builder, signature, args):
            fn = cgutils.create_struct_proxy(fnty)(context, builder)
            fn.c_addr = builder.inttoptr(args[0], context.get_value_type(types.voidptr))
            return fn._getvalue()
        return fnty(types.int64), codegen
    return as_function


_as_rhs = _function_from_address(RHS_SIG)
_as_jac = _function_from_address(JAC_SIG)
_as_lu_factor = _function_from_address(LU_FACTOR_SIG)
_as_lu_solve = _function_from_address(LU_SOLVE_SIG)
_as_outputs = _function_from_address(OUTPUT_SIG)

#: Order of the kernel addresses the entry points take (tgrad has the rhs signature).
KERNELS = ("rhs", "jac", "tgrad", "lu_factor", "lu_solve", "outputs")
KERNEL_SIGS = (RHS_SIG, JAC_SIG, TGRAD_SIG, LU_FACTOR_SIG, LU_SOLVE_SIG, OUTPUT_SIG)


# ---- public entry points ----------------------------------------------------------------------
# Each entry point (one per method and kind, `SOLVE_SINGLE`, `SOLVE_BATCH`) is compiled for its
# one signature on first use (`compiled`), not at import: a fresh install compiles only what it
# runs (~8 s for Rodas5P's solve_single on this 2-core machine) and later processes load them
# from numba's disk cache.
_SOLVE_BATCH_SIG = types.Tuple((int64[::1], int64[::1], int64[::1], float64[:, ::1], float64[::1]))(
    int64[::1], int64[::1], float64[:, ::1], float64[:, ::1], float64,
    float64[::1], float64[:, ::1], int64[:, ::1], int64[:, ::1], float64[:, ::1], float64[:, ::1],
    float64[:, ::1], float64[:, ::1], int64, int64, float64, float64, float64, float64, float64,
    int64, int64, float64, float64[:, :, ::1])

_SOLVE_SINGLE_SIG = types.Tuple((float64[:, ::1], int64, int64, int64, float64[::1], float64))(
    int64[::1], int64[::1], float64[::1], float64[::1], float64,
    float64[::1], float64[::1], int64[::1], int64[::1], float64[::1], float64[::1], float64[::1],
    float64[::1], int64, int64, float64, float64, float64, float64, float64, int64, int64,
    float64)


def _entry_points(rodas: bool):
    """(solve_batch, solve_single) for one method, Rodas5P (`rodas`) or Tsit5; each calls only
    its method's `_integrator` loop (the other branch is dropped before typing)."""

    @njit(cache=True, parallel=True, error_model="numpy", fastmath=_FASTMATH)
    def solve_batch(kernels, blocks, y0, p, t0, t_out, ev_t, ev_state, ev_kind, ev_value,
                    ev_guard, ev_guard_c, scan_t, n_outputs, burden_index, pd_rel, pd_abs, cpd_abs,
                    rtol, atol, method, max_steps, h0, y_all):
        """Integrate B trajectories in parallel, each with its own adaptive step, into y_all.

        kernels (6,): the model's kernel addresses in the order of `KERNELS` (`kernel_address`);
        y0 (B, n), p (B, n_par); t_out (n_out,) sorted, >= t0; ev_* (B, n_ev) sorted per row,
        padded with ev_t = +inf; ev_guard, ev_guard_c (B, n_ev) (see the module docstring; -inf:
        always apply); pd_rel, pd_abs, cpd_abs: the progression and confirmation rules;
        scan_t (1, n_scan) shared or (B, n_scan) per trajectory (visit days), each row sorted, >= t0
        (n_scan may be 0); n_outputs: the number of values of the
        outputs kernel, burden_index the one scans read; blocks: the Jacobian's block-lower-
        triangular structure (block starts, then n; `[0, n]` always works), for the dense fallback
        of the W solve. method: a value of `METHODS`; h0 <= 0 picks the first step automatically.
        y_all (B, n_out, n) receives the outputs. The caller allocates it with numpy, which asks
        for transparent huge pages for large arrays: numba's own allocation of a 10,000 x 366 x 10
        result faults in 4 KiB pages as the trajectories write it (0.13-0.2 s of system time, ~5 %
        of the batch's CPU time; 0.03-0.07 s when the huge pages are granted).
        Returns status (B,), accepted steps (B,), rejected (B,), scan values (B, n_scan),
        progression time (B,) (+inf: none).
        """
        integrate = _integrate_rodas5p if rodas else _integrate_tsit5
        rhs = _as_rhs(kernels[0])
        jac = _as_jac(kernels[1])
        tgrad = _as_rhs(kernels[2])
        lu_factor = _as_lu_factor(kernels[3])
        lu_solve = _as_lu_solve(kernels[4])
        outputs = _as_outputs(kernels[5])
        n_traj = y0.shape[0]
        scan_all = np.empty((n_traj, scan_t.shape[1]))
        scan_row = np.minimum(np.arange(n_traj), scan_t.shape[0] - 1)     # b, or 0 when shared
        status = np.empty(n_traj, dtype=np.int64)
        n_acc = np.empty(n_traj, dtype=np.int64)
        n_rej = np.empty(n_traj, dtype=np.int64)
        pd_time = np.empty(n_traj)
        for b in prange(n_traj):
            vectors, matrices, piv, k, out_buf = _workspace(y0.shape[1], n_outputs)
            status[b], n_acc[b], n_rej[b], pd_time[b] = integrate(
                rhs, jac, tgrad, lu_factor, lu_solve, outputs, blocks, y0[b], p[b], t0, t_out,
                ev_t[b], ev_state[b], ev_kind[b], ev_value[b], ev_guard[b], ev_guard_c[b],
                scan_t[scan_row[b]], burden_index, pd_rel, pd_abs, cpd_abs, rtol, atol, method,
                max_steps, h0, y_all[b], scan_all[b], vectors, matrices, piv, k, out_buf)
        return status, n_acc, n_rej, scan_all, pd_time

    @njit(cache=True, error_model="numpy", fastmath=_FASTMATH)
    def solve_single(kernels, blocks, y0, p, t0, t_out, ev_t, ev_state, ev_kind, ev_value,
                     ev_guard, ev_guard_c, scan_t, n_outputs, burden_index, pd_rel, pd_abs, cpd_abs,
                     rtol, atol, method, max_steps, h0):
        """One trajectory on the calling thread: y0 (n,), p (n_par,), ev_* (n_ev,).

        Returns Y (n_out, n), status, accepted steps, rejected steps, scan values (n_scan,),
        progression time (see `solve_batch`).
        """
        integrate = _integrate_rodas5p if rodas else _integrate_tsit5
        y_all = np.empty((t_out.size, y0.size))
        scan_value = np.empty(scan_t.size)
        vectors, matrices, piv, k, out_buf = _workspace(y0.size, n_outputs)
        status, n_acc, n_rej, pd_time = integrate(
            _as_rhs(kernels[0]), _as_jac(kernels[1]), _as_rhs(kernels[2]),
            _as_lu_factor(kernels[3]), _as_lu_solve(kernels[4]), _as_outputs(kernels[5]), blocks,
            y0, p, t0, t_out, ev_t, ev_state, ev_kind, ev_value, ev_guard, ev_guard_c, scan_t,
            burden_index, pd_rel, pd_abs, cpd_abs, rtol, atol, method, max_steps, h0, y_all,
            scan_value, vectors, matrices, piv, k, out_buf)
        return y_all, status, n_acc, n_rej, scan_value, pd_time

    return solve_batch, solve_single


#: method code (`METHODS`) -> its entry points
SOLVE_BATCH, SOLVE_SINGLE = {}, {}
for _method, _rodas in ((RODAS5P, True), (TSIT5, False)):
    SOLVE_BATCH[_method], SOLVE_SINGLE[_method] = _entry_points(_rodas)


_FIRST_USE = threading.Lock()
_READY: set = set()     # dispatchers `compiled` has prepared (testing that set costs ~50 ns,
                        # reading a dispatcher's `signatures` ~5 us, 2 % of a trajectory)
#: dispatcher -> a helper process compiling it into numba's disk cache
#: (`numba_backend.compile_in_background`), which `compiled` waits for
HELPERS: dict = {}
_log = logging.getLogger(__name__)


def on_disk(dispatcher) -> bool:
    """Whether numba's disk cache holds a current compiled version of `dispatcher` (numba has no
    public API for this: private attributes, and False if they change)."""
    try:
        return bool(dispatcher._cache._cache_file._load_index())
    except Exception:   # noqa: BLE001 - any change of numba's internals means "unknown"
        return False


def compiled(dispatcher, sig):
    """`dispatcher` compiled (or loaded from the disk cache) for `sig` on first use, then closed
    to other signatures: a call with other argument types raises instead of compiling again.
    When a helper process is compiling it (`HELPERS`), waits for it and loads its result.
    Thread-safe (batches may start on several threads at once)."""
    if dispatcher in _READY:
        return dispatcher
    with _FIRST_USE:
        if not dispatcher.signatures:
            helper = HELPERS.pop(dispatcher, None)
            if helper is not None:
                if helper.poll() is None:
                    _log.info("waiting for %s, compiling in a helper process for its first use after "
                              "installing", dispatcher.py_func.__name__)
                helper.wait()
            if not on_disk(dispatcher):
                _log.info("compiling %s for its first use after installing (seconds; "
                          "cached on disk afterwards)", dispatcher.py_func.__name__)
            with warnings.catch_warnings():     # the solvers rely on it knowingly
                warnings.filterwarnings("ignore", category=NumbaExperimentalFeatureWarning,
                                        message=".*First-class function type")
                dispatcher.compile(sig.args)
            dispatcher.disable_compile()
        _READY.add(dispatcher)
    return dispatcher


def single_entry(method: int = RODAS5P):
    """`solve_single` of `method` (a value of `METHODS`), compiled for its signature."""
    return compiled(SOLVE_SINGLE[method], _SOLVE_SINGLE_SIG)


def batch_entry(method: int = RODAS5P):
    """`solve_batch` of `method` (a value of `METHODS`), compiled for its signature."""
    return compiled(SOLVE_BATCH[method], _SOLVE_BATCH_SIG)
