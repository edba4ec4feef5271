"""The model layer: the churn model artifact, its safe save and load, explanation, registry access and metrics.

``training`` and ``inference`` both build on this package (and on ``features``); neither imports the other.
"""

import churn as _churn  # noqa: F401  (sets OMP_WAIT_POLICY before xgboost is first imported)
