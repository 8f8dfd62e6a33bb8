"""Scale: fairsk.dask over lazily generated data on a LocalCluster, and DDP training.

(a) ``fairsk.dask.decision_function`` (classifier logits) and ``fairsk.dask.predict``
    (regressor, with and without a box) over ``--rows`` rows generated lazily
    (``dask.array`` random, never materialised), on a LocalCluster of 2 worker
    processes whose memory limit is well below the data's size: rows per second,
    peak memory (RSS) per worker, the global gap recomputed from the result, and the
    largest difference to the in-memory call at ``--inmemory-rows``.
(b) DistributedDataParallel on 2 gloo processes against 1 process: time per epoch
    and the difference of the trained models (the projection of the global batch).

Run::

    PYTHONPATH=. python benchmarks/scale.py --rows 100000000     # the full size
    PYTHONPATH=. python benchmarks/scale.py --rows 10000000 --part a
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings

import numpy as np
import torch

D = 8  # features
K = 3  # groups


def _block(n: int, chunk: int, seed: int, what: str, block_id=None) -> np.ndarray:
    """One chunk of the data, generated from (seed, chunk index) alone: every pass
    regenerates the same rows, and each chunk is one task (no intermediate arrays)."""
    i = block_id[0]
    rows = min(chunk, n - i * chunk)
    rng = np.random.default_rng([seed, i])
    groups = rng.integers(0, K, rows)
    if what == "groups":
        return groups
    X = np.empty((rows, D + 1))
    X[:, :D] = rng.normal(size=(rows, D))
    X[:, 0] += 0.7 * groups  # the features carry the groups
    X[:, D] = groups  # the sensitive column (the models read it through sensitive_columns)
    return X


def _data(n: int, chunk: int, seed: int = 0):
    """Lazy data (n, D + 1): D features and the group column, one root task per chunk
    (the groups also alone, for the metric)."""
    import dask.array as da

    rows = (chunk,) * (n // chunk) + ((n % chunk,) if n % chunk else ())
    X = da.map_blocks(_block, n, chunk, seed, "X", chunks=(rows, (D + 1,)), dtype=np.float64,
                      meta=np.empty((0, D + 1)))
    groups = da.map_blocks(_block, n, chunk, seed, "groups", chunks=(rows,), dtype=np.int64,
                           meta=np.empty(0, dtype=np.int64))
    return X, groups


def _fit_models(seed: int = 0):
    """A classifier and two regressors (no box, box) with a small MLP body, fitted on
    4000 rows drawn like the data, loosely (tolerance 10) so that the raw outputs are
    unfair; prediction then uses a tight tolerance."""
    from fairsk import FairLayerClassifier, FairLayerRegressor

    rng = np.random.default_rng(seed)
    g = rng.integers(0, K, 4000)
    X = np.empty((4000, D + 1))
    X[:, :D] = rng.normal(size=(4000, D))
    X[:, 0] += 0.7 * g
    X[:, D] = g
    y = X[:, 0] + X[:, 1] ** 2 + 0.3 * rng.normal(size=4000)
    kw = dict(hidden_layer_sizes=(16,), max_epochs=5, random_state=0, solver="exact", tolerance=10.0,
              sensitive_columns=[D])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clf = FairLayerClassifier(enforce_on="logits", **kw).fit(X, (y > 1).astype(int))
        labels = FairLayerClassifier(**kw).fit(X, (y > 1).astype(int))  # enforce_on="labels", the default
        reg = FairLayerRegressor(**kw).fit(X, y)
        box = FairLayerRegressor(bounds=(0.0, 2.5), **kw).fit(X, y)
    return {"classifier decision_function": (clf.set_params(tolerance=0.01), "decision_function"),
            "classifier predict (fair labels)": (labels.set_params(tolerance=0.01), "predict"),
            "regressor predict": (reg.set_params(tolerance=0.01), "predict"),
            "regressor predict, box (0, 2.5)": (box.set_params(tolerance=0.01), "predict")}


def _kind(est, method: str) -> str:
    """What ``fairsk.dask.<method>`` computes: labels for a classifier's predict."""
    return "labels" if method == "predict" and hasattr(est, "classes_") else "scores"


def _worker_rss_mib() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


class _RssSampler:
    """Largest RSS of each worker while a run lasts (sampled every 0.5 s)."""

    def __init__(self, client):
        import threading

        self.client, self.peak, self.stop = client, {}, threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self):
        while not self.stop.is_set():
            try:
                for worker, rss in self.client.run(_worker_rss_mib).items():
                    self.peak[worker] = max(self.peak.get(worker, 0.0), rss)
            except Exception:  # a worker busy restarting: try again
                pass
            self.stop.wait(0.5)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()


def part_a(rows: int, chunk: int, memory_limit: str, inmemory_rows: int, box_rows: int, out,
           only: str | None = None) -> None:
    import dask
    import distributed

    import fairsk.dask as fd
    from fairsk.metrics import parity_gap

    models = {name: m for name, m in _fit_models().items() if only is None or only in name}
    data_gib = rows * (D + 1) * 8 / 2**30
    # the limit is a hard ceiling (a worker above 95% of it is restarted); no pausing or
    # spilling, which would only hide memory growth
    dask.config.set({"distributed.worker.memory.pause": False, "distributed.worker.memory.spill": False,
                     "distributed.worker.memory.target": False})
    cluster = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=memory_limit,
                                       dashboard_address=None)
    client = distributed.Client(cluster)
    try:
        print(f"(a) fairsk.dask on a LocalCluster: 2 worker processes x 1 thread, memory_limit={memory_limit} per "
              f"worker; {rows:,} rows x {D} float64 features + the group column generated lazily "
              f"({data_gib:.1f} GiB if materialised), chunks of {chunk:,} rows ({-(-rows // chunk)} partitions)",
              file=out)
        runs = [(name, est, method, box_rows if "box" in name else rows) for name, (est, method) in models.items()]
        if "regressor predict" in models:  # the same call at a tenth of the rows, to compare the peak memory
            runs.append(("regressor predict (memory vs n)", *models["regressor predict"], max(rows // 10, chunk)))
        for name, est, method, n in runs:
            X, groups = _data(n, chunk)
            t0 = time.perf_counter()
            with _RssSampler(client) as rss, warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run = fd._Run(est, X, None)  # what getattr(fd, method) does, keeping the pass count
                kind = _kind(est, method)
                lazy = run.output(kind)  # runs the check pass (and, for labels, the count search)
                t_plan = time.perf_counter() - t0
                # consuming the result: its global gap (of the scores, or of the labels'
                # selection rates), recomputed from the output in one pass
                gap = fd.parity_gap(lazy.astype(np.float64) if kind == "labels" else lazy, groups)
            elapsed = time.perf_counter() - t0
            peaks = rss.peak
            print(f"  {name}, {n:,} rows: {elapsed:.1f} s ({n / elapsed:,.0f} rows/s; {kind} found in {t_plan:.1f} s "
                  f"by {run.passes} pass(es) incl. the check, then the output pass), "
                  f"global gap {gap:.3e} (tolerance {est.tolerance}, ok: {gap <= est.tolerance + 1e-9}), "
                  f"peak RSS per worker: {', '.join(f'{v:.0f} MiB' for v in peaks.values())}", file=out)
            out.flush()
        # the in-memory call at a size that fits, against the same function over partitions
        print(f"  against the in-memory call at {inmemory_rows:,} rows (chunks of {chunk // 10:,}):", file=out)
        for name, (est, method) in models.items():
            X, groups = _data(inmemory_rows, chunk // 10, seed=1)
            Xm, gm = dask.compute(X, groups)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                expected = getattr(est, method)(Xm)
                got = getattr(fd, method)(est, X).compute()
            if _kind(est, method) == "labels":
                print(f"    {name}: labels differing from the in-memory call: {int((got != expected).sum())} of "
                      f"{len(got):,}, selection-rate gap {parity_gap(got.astype(np.float64), gm):.3e}", file=out)
                continue
            print(f"    {name}: max |dask - in-memory| = {np.abs(got - expected).max():.2e}, gap "
                  f"{parity_gap(got, gm):.3e}", file=out)
    finally:
        client.close()
        cluster.close()


# -- (b) DDP ----------------------------------------------------------------------------------------
DDP_ROWS, DDP_BATCH, DDP_EPOCHS, DDP_TOL = 65536, 1024, 2, 0.01


def _ddp_data():
    rng = np.random.default_rng(0)
    g = rng.integers(0, K, DDP_ROWS)
    X = rng.normal(size=(DDP_ROWS, D))
    X[:, 0] += 0.7 * g
    y = X[:, 0] + X[:, 1] ** 2 + 0.3 * rng.normal(size=DDP_ROWS)
    return X, g, y


def _ddp_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(D, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).double()


def _train(body, layer, X, g, y, shard, world, epoch_times, gaps=None):
    opt = torch.optim.Adam(body.parameters(), lr=1e-3)
    for _ in range(DDP_EPOCHS):
        t0 = time.perf_counter()
        for start in range(0, DDP_ROWS, DDP_BATCH):
            rows = shard(np.arange(start, min(start + DDP_BATCH, DDP_ROWS)))
            out = layer(body(torch.as_tensor(X[rows]))[:, 0], torch.as_tensor(g[rows]))
            loss = ((out - torch.as_tensor(y[rows])) ** 2).sum() / DDP_BATCH * world
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_times.append(time.perf_counter() - t0)


def _ddp_rank(rank: int, path: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from fairsk.distributed import DistributedFairnessLayer

    torch.set_num_threads(1)
    # a file store: the TCP store's background thread can abort a rank at exit
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(path, 'store')}", rank=rank, world_size=2)
    X, g, y = _ddp_data()
    body = DistributedDataParallel(_ddp_model())
    times = []
    _train(body, DistributedFairnessLayer("ecp", DDP_TOL), X, g, y, lambda r: r[rank::2], 2, times)
    if rank == 0:
        torch.save({"times": times, "state": body.module.state_dict()}, os.path.join(path, "ddp.pt"))
    dist.barrier()  # neither rank tears the group down while the other still talks
    dist.destroy_process_group()
    os._exit(0)  # skip the interpreter's teardown, where gloo's threads could abort the rank


def part_b(out) -> None:
    import torch.multiprocessing as mp

    from fairsk import FairnessLayer

    print(f"(b) DDP: {DDP_ROWS:,} rows, global batch {DDP_BATCH} (split 2 ways), {DDP_EPOCHS} epochs, MLP {D}-64-1 "
          f"in float64, Adam, ecp tolerance {DDP_TOL}", file=out)
    with tempfile.TemporaryDirectory() as path:
        mp.spawn(_ddp_rank, args=(path,), nprocs=2, join=True)
        ddp = torch.load(os.path.join(path, "ddp.pt"), weights_only=False)
    torch.set_num_threads(1)
    X, g, y = _ddp_data()
    body, times = _ddp_model(), []
    # one process on the same global batches, in the order the ranks' shards concatenate
    _train(body, FairnessLayer("ecp", DDP_TOL, "exact"), X, g, y, lambda r: np.concatenate([r[0::2], r[1::2]]), 1,
           times)
    diff = max(float((ddp["state"][k] - v).abs().max()) for k, v in body.state_dict().items())
    print(f"  1 process (FairnessLayer exact): {', '.join(f'{t:.2f}' for t in times)} s per epoch", file=out)
    print(f"  2 gloo processes (DistributedFairnessLayer + DDP): {', '.join(f'{t:.2f}' for t in ddp['times'])} s "
          "per epoch", file=out)
    print(f"  max |parameter difference| after training: {diff:.2e}", file=out)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10**8)
    parser.add_argument("--chunk", type=int, default=500_000)
    parser.add_argument("--memory-limit", default="1GiB")
    parser.add_argument("--inmemory-rows", type=int, default=2 * 10**6)
    parser.add_argument("--box-rows", type=int, default=None, help="rows of the box run (default: --rows)")
    parser.add_argument("--part", choices=["a", "b", "both"], default="both")
    parser.add_argument("--only", default=None, help="(a): only the runs whose name contains this")
    args = parser.parse_args(argv)
    out = sys.stdout
    print(f"# benchmarks/scale.py {' '.join(argv if argv is not None else sys.argv[1:])}  (torch {torch.__version__},"
          f" {os.cpu_count()} CPUs)", file=out)
    if args.part in ("a", "both"):
        part_a(args.rows, args.chunk, args.memory_limit, args.inmemory_rows, args.box_rows or args.rows, out,
               args.only)
    if args.part in ("b", "both"):
        part_b(out)


if __name__ == "__main__":
    main()
