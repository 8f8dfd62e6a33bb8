"""
Choosing a tolerance with GridSearchCV
======================================

Grid-search ``tolerance`` with :func:`fairsk.metrics.make_fair_scorer`: a candidate
whose validation gap exceeds the budget scores ``-inf``, so the search returns the
most accurate model among those fair enough. Here the groups come from a column of
``X`` (``sensitive_columns``), so no metadata routing is needed. The budget is on
the selection rates of the labels, which the default ``enforce_on="labels"``
keeps within ``tolerance`` on every call.
"""

import matplotlib.pyplot as plt
import numpy as np
from sklearn.model_selection import GridSearchCV

from fairsk import FairLayerClassifier
from fairsk.metrics import make_fair_scorer

rng = np.random.default_rng(0)
n = 1500
group = rng.integers(0, 2, n)
X = np.column_stack([rng.normal(size=(n, 4)) + 0.8 * group[:, None], group])
y = (X[:, 0] + 0.5 * X[:, 1] + 0.3 * rng.normal(size=n) > 0.5).astype(int)

clf = FairLayerClassifier(sensitive_columns=[4], max_epochs=10, random_state=0,
                          solver="exact")
# the gap of predict's labels (their selection rates), the default mode's guarantee
scorer = make_fair_scorer(max_gap=0.1, response_method="predict")
tolerances = [0.0, 0.05, 0.1, 0.5, 2.0]
search = GridSearchCV(clf, {"tolerance": tolerances}, scoring=scorer, cv=3).fit(X, y)
scores = search.cv_results_["mean_test_score"]
print("mean validation accuracy per tolerance (-inf: over the 0.1 budget):",
      np.round(scores, 3))
print("chosen:", search.best_params_)

finite = np.isfinite(scores)
plt.plot(np.array(tolerances)[finite], scores[finite], marker="o")
plt.xlabel("tolerance")
plt.ylabel("validation accuracy (within budget)")
plt.title("GridSearchCV over the fairness tolerance")
plt.show()
