# Run on a CUDA machine: python benchmarks/gpu_check.py (fairsk, qpth and skorch importable).
"""Device check: the layer on CUDA equals the CPU result (outputs and gradients),
stays on the device, meets its constraints; timing of the exact solver on the GPU."""
import time

import torch

from fairsk import FairnessLayer
from fairsk.metrics import parity_gap, residual_gap

print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0))
gen = torch.Generator().manual_seed(0)
worst = {"out": 0.0, "grad": 0.0}
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
    for dev in ("cpu", "cuda"):
        v = z.detach().clone().to(dev).requires_grad_(True)
        out = FairnessLayer(crit, 0.02, solver, box)(v, g.to(dev), y.to(dev))
        assert out.device.type == dev
        (out * w.to(dev)).sum().backward()
        res[dev] = (out.detach().cpu(), v.grad.cpu())
    worst["out"] = max(worst["out"], float((res["cpu"][0] - res["cuda"][0]).abs().max()))
    worst["grad"] = max(worst["grad"], float((res["cpu"][1] - res["cuda"][1]).abs().max()))
    o = res["cuda"][0].numpy()
    gap = max((parity_gap(o[:, j], g.numpy()) if crit == "ecp" else residual_gap(y.numpy(), o[:, j], g.numpy()))
              for j in range(2))
    assert gap <= 0.02 + 1e-6, (trial, gap)
print(f"24 random cases: CUDA vs CPU max |diff| outputs {worst['out']:.2e}, gradients {worst['grad']:.2e};"
      " constraints met")
for n in (10_000, 1_000_000, 10_000_000):
    for dev in ("cpu", "cuda"):
        z = torch.randn(n, dtype=torch.float64, device=dev)
        g = torch.randint(0, 8, (n,), device=dev)
        layer = FairnessLayer("ecp", 0.01, "exact")
        def step():
            v = z.clone().requires_grad_(True)
            layer(v, g).sum().backward()
            if dev == "cuda":
                torch.cuda.synchronize()
        step()
        t = time.perf_counter()
        for _ in range(5):
            step()
        print(f"n={n:>10,} {dev:>4}: {(time.perf_counter() - t) / 5 * 1e3:8.2f} ms fwd+bwd")
