"""
Saving and loading a model
==========================

Pickle works (and ``sklearn.clone``), but loading a pickle runs code from the file.
:mod:`fairsk.persistence` saves a fitted model, or a streaming predictor mid-stream,
as a zip of JSON and weights that loads without executing anything from the file.
With a key, the archive is signed (HMAC-SHA256): a file changed by anyone without the
key, down to one parameter, is refused at load. Without a key, only accidental
corruption is detected.
"""

import os
import tempfile

import numpy as np

from fairsk import FairLayerRegressor, StreamingFairPredictor
from fairsk.persistence import load, save

rng = np.random.default_rng(0)
X = rng.normal(size=(500, 4))
s = rng.integers(0, 3, 500)
y = X[:, 0] + 0.5 * s

stream = StreamingFairPredictor(FairLayerRegressor(max_epochs=5, random_state=0, solver="exact"), tolerance=0.02)
stream.fit(X, y, sensitive_features=s)
for i in range(100):
    stream.partial_predict(X[i : i + 1], sensitive_features=s[i : i + 1])

KEY = b"keep this secret, e.g. in your secrets manager"
path = save(stream, os.path.join(tempfile.mkdtemp(), "stream.fairsk"), key=KEY)
restored = load(path, key=KEY)
a = [stream.partial_predict(X[i : i + 1], sensitive_features=s[i : i + 1]) for i in range(100, 200)]
b = [restored.partial_predict(X[i : i + 1], sensitive_features=s[i : i + 1]) for i in range(100, 200)]
print("identical continuation:", np.array_equal(np.concatenate(a), np.concatenate(b)))
print(f"{os.path.getsize(path) / 1024:.1f} KiB on disk; pooled gap {restored.pooled_gap_:.4f}")

try:
    load(path, key=b"another key")
except ValueError as err:
    print("refused:", err)
