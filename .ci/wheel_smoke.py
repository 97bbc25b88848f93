"""Smoke test of an installed wheel (run from outside the source tree): one process/feedback."""

import numpy as np

import sona
from sona.engine import SONAConfig, SONAEngine

print("sona", sona.__version__, "from", sona.__file__)
with SONAEngine(SONAConfig(dim=16, seed=1)) as engine:
    x = np.zeros(16, dtype=np.float32)
    x[0] = 1.0
    decision = engine.process(x)
    engine.feedback(decision.trajectory_id, 1.0)
    print("process/feedback ok: tier", decision.tier, "trajectory", decision.trajectory_id)
    try:
        engine.feedback(decision.trajectory_id, 1.0)
    except sona.SonaError as exc:
        print("repeated feedback refused:", type(exc).__name__)
    else:
        raise SystemExit("repeated feedback was accepted")
