"""churn package."""

import os as _os

# XGBoost's OpenMP threads busy-wait by default; on a shared 2-core machine that made training
# 20x slower. Passive waiting costs nothing measurable when the machine is idle. Must be set
# before xgboost (and its OpenMP runtime) is first imported.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
