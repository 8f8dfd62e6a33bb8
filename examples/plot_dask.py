"""
Fair predictions over a Dask DataFrame
======================================

A fitted fairsk estimator predicts over a dask DataFrame with
:func:`fairsk.dask.predict`: the result is lazy, keeps the DataFrame's partitions,
and the guarantee holds over **all** partitions together, exactly as for one
in-memory call. Predicting partition by partition (what ``map_partitions`` or
dask-ml's ``ParallelPostFit`` do) would only make each partition fair on its own.

Here the partitions have very different sizes and group mixes. The figure shows the
group means of the predictions inside each partition (they differ: a partition is
not the population) and over the whole data (within the tolerance). A classifier's
default ``predict`` (labels at parity) works the same way: the selection rates over
all partitions are within the tolerance, and the labels are the in-memory call's.
"""

# %%
import warnings

import dask.dataframe as dd
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from dask import delayed
from distributed import Client, LocalCluster

import fairsk.dask as fd
from fairsk import FairLayerClassifier, FairLayerRegressor
from fairsk.metrics import parity_gap

rng = np.random.default_rng(0)
n = 10_000
group = rng.choice(["a", "b", "c"], size=n, p=[0.5, 0.3, 0.2])
x = rng.normal(size=(n, 3))
x[:, 0] += (group == "b") - 0.5 * (group == "c")
frame = pd.DataFrame(x, columns=["x0", "x1", "x2"]).assign(group=group)
y = frame["x0"] + 0.5 * frame["x1"] ** 2 + 0.3 * rng.normal(size=n)
# sort by group within unequal slices so that the partitions differ in their mix
bounds = [0, 300, 4000, 4500, 8000, n]
frame = pd.concat(
    [
        frame.iloc[a:b].sort_values("group", kind="stable")
        for a, b in zip(bounds, bounds[1:])
    ]
)
y = y.loc[frame.index]

# %%
# Fit on a sample in memory, as usual. The tolerance of 0.02 is the largest gap
# allowed between the group means of one call.
params = dict(
    hidden_layer_sizes=(16,),
    tolerance=0.02,
    sensitive_columns="group",
    max_epochs=5,
    random_state=0,
    solver="exact",
)
X_fit, y_fit = frame.iloc[:3000], y.iloc[:3000]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    reg = FairLayerRegressor(**params).fit(X_fit, y_fit)
    clf = FairLayerClassifier(**params).fit(X_fit, (y_fit > y.median()).astype(int))

# %%
# Predict over the dask DataFrame on a local cluster of two workers.
cluster = LocalCluster(
    n_workers=2, threads_per_worker=1, processes=False, dashboard_address=":0"
)
client = Client(cluster)
try:
    ddf = dd.from_delayed(
        [delayed(frame.iloc[a:b]) for a, b in zip(bounds, bounds[1:])],
        meta=frame.iloc[:0],
    )
    lazy = fd.predict(reg, ddf)  # lazy: nothing of the output is computed yet
    print(
        "partitions:",
        lazy.npartitions,
        "rows per partition:",
        ddf.map_partitions(len).compute().tolist(),
    )
    pred = lazy.compute()
    # a classifier's default predict (enforce_on="labels"): labels whose selection
    # rates over all partitions are within the tolerance, the in-memory ones exactly
    labels = fd.predict(clf, ddf).compute()
finally:
    client.close()
    cluster.close()

gap = parity_gap(pred, frame["group"])
print(f"gap over all partitions: {gap:.4f} (tolerance {reg.tolerance})")
in_memory = reg.predict(frame)
largest = np.abs(pred.to_numpy() - in_memory).max()
print(f"largest difference to the in-memory call: {largest:.1e}")
rates = labels.groupby(frame["group"]).mean()
print("selection rates over all partitions:", rates.round(4).to_dict())
same = (labels.to_numpy() == clf.predict(frame)).all()
print("labels identical to the in-memory call:", bool(same))

# %%
# Group means per partition and over the whole data.
part_of = np.repeat(np.arange(len(bounds) - 1), np.diff(bounds))
table = pd.DataFrame(
    {
        "pred": pred.to_numpy(),
        "group": frame["group"].to_numpy(),
        "partition": part_of,
    }
)
per_part = table.groupby(["partition", "group"])["pred"].mean().unstack()
overall = table.groupby("group")["pred"].mean()

fig, ax = plt.subplots(figsize=(7, 4))
for i, g in enumerate(per_part.columns):
    ax.scatter(
        per_part.index + (i - 1) * 0.12,
        per_part[g],
        label=f"group {g}, per partition",
        s=40,
    )
    ax.axhline(overall[g], color=f"C{i}", linestyle="--", linewidth=1)
ax.set_xticks(per_part.index)
ax.set_xlabel("partition")
ax.set_ylabel("mean prediction")
ax.set_title("Group means per partition (dots) and over all partitions (dashed)")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()
