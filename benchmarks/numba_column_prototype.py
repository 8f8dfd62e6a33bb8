"""What compiled code would leave of the layer's cost in training: a prototype.

    pip install numba==0.60.0   # not a fairsk dependency
    PYTHONPATH=. python benchmarks/numba_column_prototype.py

The usual regressor training batch (one output column, one attribute of at most 64
groups, no box, ECP) projected by two numba kernels (forward with its certificate, and
the backward), in one autograd node. First the prototype is checked against
``FairnessLayer`` on 300 random batches (outputs equal, gradients to 1e-15); then the
epoch CPU time over the plain net is measured by ``performance.py``'s section 6
(interleaved fits, one torch thread), with the prototype as one more variant. Not part
of the library: it covers neither the box, other criteria, nor the float32 refusals of
the real route (a batch it does not answer goes to the layer).
Results: ``benchmarks/results/numba_column_prototype.txt``.
"""

import math

import numpy as np
import torch
from numba import njit

MAXK = 64


@njit(cache=True)
def _fwd(col, codes, tol, is32):
    n = col.shape[0]
    counts = np.zeros(MAXK)
    sums = np.zeros(MAXK)
    hi = -np.inf
    lo = np.inf
    for i in range(n):
        c = codes[i]
        if c < 0 or c >= MAXK:
            return None
        v = np.float64(col[i])
        counts[c] += 1.0
        sums[c] += v
        if v > hi:
            hi = v
        if v < lo:
            lo = v
    if not (math.isfinite(hi) and math.isfinite(lo)):
        return None
    scale = max(hi, -lo)
    if is32 and tol > 0:
        tol = max(0.0, tol - 2.0 * 2.0 ** -24 * scale)
    # present groups
    k = 0
    slot = np.full(MAXK, -1)
    for c in range(MAXK):
        if counts[c] > 0:
            slot[c] = k
            k += 1
    m = np.empty(k)
    w = np.empty(k)
    for c in range(MAXK):
        if slot[c] >= 0:
            m[slot[c]] = sums[c] / counts[c]
            w[slot[c]] = counts[c]
    mmax = -np.inf
    mmin = np.inf
    amax = 0.0
    for g in range(k):
        mmax = max(mmax, m[g])
        mmin = min(mmin, m[g])
        amax = max(amax, abs(m[g]))
    delta = 1e-12 * (1.0 + amax + tol)
    shift = np.zeros(k)
    tight = np.zeros(k, dtype=np.bool_)
    if k >= 2 and not (mmax - mmin < tol - delta):
        bps = np.sort(np.concatenate((m - tol, m)))
        last = 0
        fl = 0.0
        fh = 0.0
        for j in range(bps.shape[0]):
            c0 = bps[j]
            f = 0.0
            for g in range(k):
                above = m[g] - tol - c0
                if above > 0:
                    f += w[g] * above
                elif c0 > m[g]:
                    f -= w[g] * (c0 - m[g])
            if f >= 0:
                last = j
                fl = f
            else:
                fh = f
                break
        cst = bps[last]
        if last < bps.shape[0] - 1:
            b1 = bps[last + 1]
            if fl > 0 and fl > fh and b1 > cst:
                cst = cst + fl / ((fl - fh) / (b1 - cst))
        top = cst + tol
        for g in range(k):
            x = m[g]
            new = top if x > top else (cst if x < cst else x)
            shift[g] = new - x
            tight[g] = x <= cst + delta or x >= top - delta
    out = np.empty(n, dtype=col.dtype)
    osum = np.zeros(k)
    oabs = 0.0
    for i in range(n):
        g = slot[codes[i]]
        y = col.dtype.type(np.float64(col[i]) + shift[g])
        out[i] = y
        osum[g] += np.float64(y)
        oabs = max(oabs, abs(np.float64(y)))
    # certificate: all pairs within tol + atol (ecp)
    omax = -np.inf
    omin = np.inf
    for g in range(k):
        v = osum[g] / w[g]
        omax = max(omax, v)
        omin = min(omin, v)
    worst = (omax - omin) - tol if k >= 2 else 0.0
    atol = 1e-5 if is32 else 1e-6
    if not worst <= atol:
        return None
    return out, tight, slot, w


@njit(cache=True)
def _bwd(grad, codes, tight, slot, w):
    n = grad.shape[0]
    k = w.shape[0]
    s = np.zeros(k)
    for i in range(n):
        s[slot[codes[i]]] += np.float64(grad[i])
    v = np.zeros(k)
    den = 0.0
    num = 0.0
    for g in range(k):
        if tight[g]:
            v[g] = s[g] / w[g]
            den += w[g]
            num += w[g] * v[g]
    lam = num / den if den > 0 else 0.0
    for g in range(k):
        if tight[g]:
            v[g] -= lam
    out = np.empty(n, dtype=grad.dtype)
    for i in range(n):
        out[i] = grad.dtype.type(np.float64(grad[i]) - v[slot[codes[i]]])
    return out


class _Node(torch.autograd.Function):
    @staticmethod
    def forward(ctx, z, out, state):
        ctx.state = state
        return out

    @staticmethod
    def backward(ctx, grad):
        codes, tight, slot, w = ctx.state
        g = grad.detach().reshape(-1).contiguous().numpy()
        return torch.from_numpy(_bwd(g, codes, tight, slot, w)).reshape(grad.shape), None, None


def project(z, groups, tol):
    """None when the prototype does not apply (the caller then takes the real layer)."""
    if not (z.dim() == 2 and z.shape[1] == 1 and groups.dtype == torch.int64):
        return None
    col = z.detach().numpy().reshape(-1)
    codes = groups.numpy().reshape(-1)
    r = _fwd(col, codes, float(tol), z.dtype == torch.float32)
    if r is None:
        return None
    out, tight, slot, w = r
    res = torch.from_numpy(out).reshape(z.shape)
    if z.requires_grad and torch.is_grad_enabled():
        return _Node.apply(z, res, (codes, tight, slot, w))
    return res


def check():
    from fairsk import FairnessLayer

    rng = np.random.default_rng(0)
    worst_o = worst_g = 0.0
    checked = 0
    for t in range(300):
        n, k = int(rng.integers(2, 300)), int(rng.integers(1, 6))
        tol = float(rng.choice([0.0, 0.01, 0.3]))
        dt = torch.float32 if t % 2 else torch.float64
        z = torch.tensor(rng.normal(size=(n, 1)) * rng.choice([0.1, 1, 5]), dtype=dt, requires_grad=True)
        g = torch.from_numpy(rng.integers(0, k, (n, 1)))
        o = project(z, g, tol)
        if o is None:
            continue
        gr = torch.from_numpy(rng.normal(size=(n, 1))).to(dt)
        (a,) = torch.autograd.grad(o, z, gr)
        z2 = z.detach().clone().requires_grad_(True)
        o2 = FairnessLayer("ecp", tol, "exact")(z2, g)
        (b,) = torch.autograd.grad(o2, z2, gr)
        worst_o = max(worst_o, float((o - o2).detach().abs().max()))
        worst_g = max(worst_g, float((a - b).abs().max()))
        checked += 1
    print(f"checked against FairnessLayer on {checked} batches: max |output difference| {worst_o:.3g},"
          f" max |gradient difference| {worst_g:.3g}")


def overhead():
    """performance.py's section 6 for the regressor, with the prototype as one more variant."""
    import warnings

    from performance import overhead_ablation

    from fairsk import FairLayerRegressor

    def prototype(self, z, groups, y, real):
        z2 = z.unsqueeze(1) if z.dim() == 1 else z
        out = project(z2, groups, self.tolerance) if self.bounds is None else None
        if out is None:  # a batch the prototype does not answer: the layer
            return real(self, z, groups, y)
        return out if out.shape == z.shape else out.reshape(z.shape)

    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    overhead_ablation(None, 128, 2, 3, more={"the numba prototype": prototype}, estimators=(FairLayerRegressor,))


if __name__ == "__main__":
    check()
    overhead()
