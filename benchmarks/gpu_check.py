# Run on a CUDA machine: PYTHONPATH=. python benchmarks/gpu_check.py [--quick]
# (fairsk, qpth and skorch importable). Without CUDA it runs on the CPU as a smoke test.
"""Device check, in five parts, printed as one report:

1. the layer on CUDA equals the CPU result (outputs and gradients) and meets its
   constraints (recomputed in NumPy), on random cases of every path; the device path
   (one attribute, exact solver, with and without a box) equals the host path on the
   same device;
2. the layer's forward + backward at n = 10^4, 10^6, 10^7 on the CPU, on CUDA through
   the host solver, and on CUDA through the device path, with and without a box, and
   with three attributes,
   against one ``bincount`` on the same device (the floor);
3. host <-> device copies per training step (the profiler's memcpy events and their
   a plain MLP step, the device path without and with a box, qpth;
4. an epoch of a wider MLP (two hidden layers of 512) through the estimators on
   CUDA: plain net, exact solver, qpth, and the default classifier (box [0, 1]), with
   the layer's own choice of path (parts 1-3 force the device path at every size);
5. prediction on 10^7 rows on CUDA, with and without sensitive features.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings

import numpy as np
import torch

from fairsk import FairLayerClassifier, FairLayerRegressor, FairnessLayer
from fairsk.metrics import parity_gap, residual_gap
from fairsk.projection import device as device_path

parser = argparse.ArgumentParser()
parser.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
args = parser.parse_args()
CUDA = torch.cuda.is_available()
DEV = "cuda" if CUDA else "cpu"
QUICK = args.quick or not CUDA
warnings.simplefilter("ignore", UserWarning)


def sync():
    if CUDA:
        torch.cuda.synchronize()


@contextlib.contextmanager
def host_path():
    """The layer's host solver even for CUDA tensors (the path before the device path)."""
    saved = device_path._on_accelerator
    device_path._on_accelerator = lambda z: False
    try:
        yield
    finally:
        device_path._on_accelerator = saved


def timed(fn, reps=5):
    fn()
    sync()
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


# parts 1-3 time the device path at every size; part 4 uses the layer's own rule (with a
# box, calls under device_path._BOX_MIN_ROWS rows are solved on the host)
BOX_MIN_ROWS = device_path._BOX_MIN_ROWS
device_path._BOX_MIN_ROWS = 0

print("torch", torch.__version__, "| cuda", CUDA, "|", torch.cuda.get_device_name(0) if CUDA else "no GPU",
      "| numpy", np.__version__)

# 1. correctness --------------------------------------------------------------------
gen = torch.Generator().manual_seed(0)
worst = {"out": 0.0, "grad": 0.0, "dev_vs_host": 0.0}
for trial in range(24):
    n = [50, 500, 5000][trial % 3]
    a = 1 + trial % 3
    crit = ["ecp", "eer"][trial % 2]
    box = (-1.0, 1.5) if trial % 4 == 0 else None
    solver = "exact" if trial % 5 else "qpth"
    if solver == "qpth" and box is not None:
        n = 50
    z = torch.randn(n, 2, dtype=torch.float64, generator=gen)
    g = torch.randint(0, 4, (n, a), generator=gen)
    y = torch.rand(n, dtype=torch.float64, generator=gen) * 0.5
    w = torch.randn(n, 2, dtype=torch.float64, generator=gen)
    res = {}
    for dev in ("cpu", DEV):
        v = z.detach().clone().to(dev).requires_grad_(True)
        out = FairnessLayer(crit, 0.02, solver, box)(v, g.to(dev), y.to(dev))
        assert out.device.type == dev
        (out * w.to(dev)).sum().backward()
        res[dev] = (out.detach().cpu(), v.grad.cpu())
    worst["out"] = max(worst["out"], float((res["cpu"][0] - res[DEV][0]).abs().max()))
    worst["grad"] = max(worst["grad"], float((res["cpu"][1] - res[DEV][1]).abs().max()))
    o = res[DEV][0].numpy()
    gaps = [parity_gap(o[:, j], g.numpy()) if crit == "ecp" else residual_gap(y.numpy(), o[:, j], g.numpy())
            for j in range(2)]
    assert max(gaps) <= 0.02 + 1e-6, (trial, gaps)
taken = 0
for trial in range(18):  # the device path against the host path, both on DEV
    n, crit, f32 = [30, 3000, 300000][trial % 3], ["ecp", "eer"][trial % 2], trial % 4 == 3
    dtype = torch.float32 if f32 else torch.float64
    z = torch.randn(n, 3, dtype=torch.float64, generator=gen).to(dtype)
    g = torch.randint(0, 2 + trial % 12, (n,), generator=gen)
    if trial >= 12:  # two attributes
        g = torch.stack([g, torch.randint(0, 3, (n,), generator=gen)], 1)
    y = torch.rand(n, 3, dtype=torch.float64, generator=gen)
    box = (-1.0, 1.2) if trial < 6 else None
    res = []
    for use_host in (False, True):
        v = z.clone().to(DEV).requires_grad_(True)
        with host_path() if use_host else contextlib.nullcontext():
            calls = []
            inner = device_path.project_on_device
            device_path.project_on_device = lambda *a, **k: calls.append(inner(*a, **k)) or calls[-1]
            try:
                out = FairnessLayer(crit, 0.02, "exact", box)(v, g.to(DEV), y.to(DEV))
            finally:
                device_path.project_on_device = inner
        taken += bool(calls) and calls[-1] is not None and not use_host
        (out.double() * torch.linspace(-1, 1, out.numel(), dtype=torch.float64, device=DEV).reshape(out.shape)
         ).sum().backward()
        res.append((out.detach().double().cpu(), v.grad.double().cpu()))
        o = out.detach().double().cpu().numpy()
        gcols = g.reshape(n, -1).numpy()
        gaps = [parity_gap(o[:, j], gcols[:, a]) if crit == "ecp" else residual_gap(y[:, j].numpy(), o[:, j],
                                                                                      gcols[:, a])
                for j in range(3) for a in range(gcols.shape[1])]
        assert max(gaps) <= 0.02 + (1e-5 if f32 else 1e-6), (trial, gaps)
    scale = 1e-6 if f32 else 1e-11
    diff = max(float((res[0][0] - res[1][0]).abs().max()), float((res[0][1] - res[1][1]).abs().max()))
    assert diff <= scale, (trial, diff)
    worst["dev_vs_host"] = max(worst["dev_vs_host"], diff)
print(f"1. 24 random cases (1-3 attributes, box or not, exact and qpth): {DEV} vs CPU max |diff| outputs "
      f"{worst['out']:.2e}, gradients {worst['grad']:.2e}; constraints met (recomputed in NumPy)")
print(f"   18 cases, device path vs host path on {DEV} (float32 and float64, n up to 3e5; 6 with a box, 6 with "
      f"two attributes): max |diff| {worst['dev_vs_host']:.2e}; answered on the device in {taken} of 18")

# 2. the layer at scale --------------------------------------------------------------
print("\n2. layer forward + backward, one attribute of 8 groups (or 3 attributes of 2, 3, 4), float64, "
      "tolerance 0.01 (median of 5)")
print(f"{'n':>11} {'where':>22} {'ms':>9} {'bincount ms':>11} {'ratio':>7}")
sizes = (10_000, 1_000_000) if QUICK else (10_000, 1_000_000, 10_000_000)
for n in sizes:
    configs = [("cpu", "host", None, 1), ("cpu", "host", (-2.0, 2.0), 1), ("cpu", "host", None, 3)]
    if CUDA:
        configs += [("cuda", "host", None, 1), ("cuda", "device", None, 1), ("cuda", "host", (-2.0, 2.0), 1),
                    ("cuda", "device", (-2.0, 2.0), 1), ("cuda", "host", None, 3), ("cuda", "device", None, 3),
                    ("cuda", "host", (-2.0, 2.0), 3), ("cuda", "device", (-2.0, 2.0), 3)]
    for dev, how, box, attrs in configs:
        if attrs > 1 and box is not None and n > 1_000_000:
            continue  # the host's active-set iteration over 10^7 rows takes several seconds a call
        z = torch.randn(n, dtype=torch.float64, device=dev)
        g = torch.randint(0, 8, (n,), device=dev) if attrs == 1 else torch.stack(
            [torch.randint(0, 2 + a, (n,), device=dev) for a in range(attrs)], 1)
        layer = FairnessLayer("ecp", 0.01, "exact", box)

        def step(z=z, g=g, layer=layer):
            v = z.clone().requires_grad_(True)
            layer(v, g).sum().backward()

        with host_path() if how == "host" else contextlib.nullcontext():
            t = timed(step)
        floor = timed(lambda g=g: torch.bincount(g.reshape(-1)[:n], minlength=8))
        label = f"{dev} {how}" + (" box" if box else "") + (f" {attrs} attrs" if attrs > 1 else "")
        print(f"{n:>11,} {label:>22} {t * 1e3:9.2f} {floor * 1e3:11.3f} {t / floor:6.1f}x")

# 3. host <-> device copies per training step -----------------------------------------
print("\n3. host<->device copies per training step (MLP 20-512-512-1, batch 1024, 20 steps, profiler)")
if CUDA:
    from torch.profiler import ProfilerActivity, profile

    X = torch.randn(1024 * 20, 20, device=DEV)
    G = torch.randint(0, 2, (1024 * 20,), device=DEV)
    Y = torch.randn(1024 * 20, 1, device=DEV)
    for label, layer, squash in (("plain (no layer)", None, False),
                                 ("exact, device path", FairnessLayer("ecp", 0.01, "exact"), False),
                                 ("exact, box [0, 1]", FairnessLayer("ecp", 0.01, "exact", (0.0, 1.0)), True),
                                 ("qpth (host statistics)", FairnessLayer("ecp", 0.01, "qpth"), False)):
        net = torch.nn.Sequential(torch.nn.Linear(20, 512), torch.nn.ReLU(), torch.nn.Linear(512, 512),
                                  torch.nn.ReLU(), torch.nn.Linear(512, 1)).to(DEV)
        opt = torch.optim.Adam(net.parameters())

        def train_steps(net=net, opt=opt, layer=layer, squash=squash):
            for s in range(20):
                xb, gb, yb = X[s * 1024:(s + 1) * 1024], G[s * 1024:(s + 1) * 1024], Y[s * 1024:(s + 1) * 1024]
                out = net(xb)
                if squash:
                    out = torch.sigmoid(out)
                if layer is not None:
                    out = layer(out, gb)
                loss = ((out - yb) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            sync()

        train_steps()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            train_steps()
        counts = {"DtoH": 0, "HtoD": 0}
        for ev in prof.events():
            for key in counts:
                if "Memcpy" in ev.name and key in ev.name:
                    counts[key] += 1
        t = timed(train_steps, reps=3)
        print(f"   {label:<28} DtoH {counts['DtoH'] / 20:5.1f}  HtoD {counts['HtoD'] / 20:5.1f} per step;"
              f" {t / 20 * 1e3:7.2f} ms per step")
else:
    print("   (no CUDA: skipped)")

# 4. an epoch of a wider MLP through the estimators ------------------------------------
device_path._BOX_MIN_ROWS = BOX_MIN_ROWS
rows = 20_000 if QUICK else 200_000
print(f"\n4. estimator epoch on {DEV}: {rows:,} rows x 20 features, MLP (512, 512), batch 1024 (median of epochs 2-3)")
rng = np.random.default_rng(0)
Xs = rng.normal(size=(rows, 20)).astype(np.float32)
sens = rng.integers(0, 2, rows)
y_reg = (Xs[:, 0] + sens * 0.8 + rng.normal(size=rows) * 0.3).astype(np.float64)
y_clf = (y_reg > 0.4).astype(int)
common = dict(hidden_layer_sizes=(512, 512), batch_size=1024, max_epochs=3, random_state=0, device=DEV)
plain = {}
for Est, yt in ((FairLayerRegressor, y_reg), (FairLayerClassifier, y_clf)):
    for solver in (None, "exact", "qpth"):
        est = Est(**common, **({} if solver is None else {"solver": solver}))
        t = time.perf_counter()
        if solver is None:
            est.fit(Xs, yt)
        else:
            est.fit(Xs, yt, sensitive_features=sens)
        sync()
        epoch = statistics.median(est.net_.history[1:, "dur"])
        if solver is None:
            plain[Est.__name__] = epoch
        name = Est.__name__ + ("" if Est is FairLayerRegressor else " (fair labels: box [0, 1])")
        print(f"   {name:<48} {solver or 'plain':>6}: {epoch:7.3f} s per epoch"
              f" ({epoch / plain[Est.__name__]:5.2f}x plain)")

# 5. prediction on 10^7 rows -----------------------------------------------------------
rows = 100_000 if QUICK else 10_000_000
print(f"\n5. prediction on {rows:,} rows on {DEV} (median of 3)")
reg = FairLayerRegressor(**{**common, "max_epochs": 1}, solver="exact").fit(Xs, y_reg, sensitive_features=sens)
plain_reg = FairLayerRegressor(**{**common, "max_epochs": 1}).fit(Xs, y_reg)
Xbig = rng.normal(size=(rows, 20)).astype(np.float32)
sbig = rng.integers(0, 2, rows)
t_fair = timed(lambda: reg.predict(Xbig, sensitive_features=sbig), reps=3)
t_plain = timed(lambda: plain_reg.predict(Xbig), reps=3)
pred = reg.predict(Xbig, sensitive_features=sbig)
print(f"   regressor predict with groups {t_fair:7.2f} s, without (plain net) {t_plain:7.2f} s"
      f" ({t_fair / t_plain:4.2f}x); gap {parity_gap(pred, sbig):.4f} (tolerance {reg.tolerance})")
