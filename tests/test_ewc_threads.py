"""Two threads on one EWC++ object (issue 9, item 2).

The bindings used to release the GIL while holding the object's lock: a second thread calling
anything on the same object (even a getter) then waited for the lock while holding the GIL, and the
first waited for the GIL to return, so both hung forever. Each scenario runs in a subprocess with a
timeout, so a regression fails instead of hanging the suite. Inputs straddle the size at which the
binding releases the GIL (65,536 floats): one thread on the released path, the other on the
GIL-holding path, on the same object.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import sys, threading
import numpy as np
import sona
from sona.ewc import (AdaptiveLambda, EwcPlusPlus, GradientProjection, OnlineFisher,
                      TaskBoundaryDetector)
from sona import kernels

rng = np.random.default_rng(7)
errors = []
done = threading.Event()

def run(heavy, light, rounds):
    def a():
        try:
            for i in range(rounds):
                heavy(i)
        except BaseException as e:
            errors.append(repr(e))
        finally:
            done.set()
    def b():
        try:
            n = 0
            while not done.is_set() or n < 3:
                light(n)
                n += 1
        except BaseException as e:
            errors.append(repr(e))
    ts = [threading.Thread(target=a), threading.Thread(target=b)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors
"""

SCENARIOS = {
    # P large: every call releases the GIL; the getter thread takes the lock with the GIL held.
    "ewc_large_p": """
p = 70_000
e = EwcPlusPlus(p, lambda_=2.0)
g = rng.normal(size=(2, p)).astype(np.float32)
theta = rng.normal(size=p).astype(np.float32)
proj = GradientProjection(p, 4)
proj.add(g[:1])
def heavy(i):
    e.update_fisher_batch(g)
    e.update_fisher(g[0])
    e.complete_task(theta)
    assert np.isfinite(e.penalty(theta))
    out = e.apply(theta, g[1], projection=proj)
    assert out.shape == (p,)
def light(n):
    assert e.param_count == p
    e.task_count, e.online_samples, e.lambda_, e.gamma, e.decay
    e.fisher, e.theta_star
    proj.basis_size
run(heavy, light, 12)
assert e.task_count == 12 and e.online_samples == 0
""",
    # P small, batch large: the batch releases the GIL, single-vector calls keep it.
    "ewc_small_p_big_batch": """
p = 1000
e = EwcPlusPlus(p)
big = rng.normal(size=(100, p)).astype(np.float32)
theta = rng.normal(size=p).astype(np.float32)
e.update_fisher(theta)
e.complete_task(theta)
def heavy(i):
    e.update_fisher_batch(big)
def light(n):
    e.penalty(theta)
    e.apply(theta, theta)
    e.update_fisher(theta)
    e.lambda_ = 1.0 + (n % 3)
    e.online_samples
run(heavy, light, 40)
assert e.online_samples >= 40 * 100 + 3
""",
    "fisher": """
p = 2000
f = OnlineFisher(p, gamma=0.99)
big = rng.normal(size=(64, p)).astype(np.float32)
one = rng.normal(size=p).astype(np.float32)
counts = {"light": 0}
def heavy(i):
    f.update_batch(big)
def light(n):
    f.update(one)
    counts["light"] += 1
    f.samples, f.gamma, f.floor, f.param_count
    assert np.isfinite(f.estimate()).all()
run(heavy, light, 40)
assert f.samples == 40 * 64 + counts["light"]
big_p = OnlineFisher(70_000)
g = rng.normal(size=70_000).astype(np.float32)
run(lambda i: big_p.update(g), lambda n: big_p.samples, 20)
assert big_p.samples == 20
""",
    "detector": """
d = 256
det = TaskBoundaryDetector(d, window=20, reference=40, param_count=70_000)
pca = TaskBoundaryDetector(d, window=20, reference=40, components=4)
xs = rng.normal(size=(300, d)).astype(np.float32)
x = xs[0]
theta = np.zeros(70_000, dtype=np.float32)
def heavy(i):
    det.observe_batch(xs)
    pca.observe_batch(xs)
def light(n):
    det.observe(x)
    det.observe(x, theta)
    pca.observe(x)
    det.observed, det.checks, det.last_check, det.detections, det.last_boundary
    det.stable_snapshot()
    pca.exceedances
run(heavy, light, 15)
assert det.observed >= 15 * 300 and pca.observed >= 15 * 300
""",
    "projection": """
p = 70_000
gp = GradientProjection(p, 64)
m = rng.normal(size=(8, p)).astype(np.float32)
small = GradientProjection(100, 50)
ms = rng.normal(size=(40, 100)).astype(np.float32)
g = rng.normal(size=p).astype(np.float32)
def heavy(i):
    gp.add(m[i % 8 : i % 8 + 1], threshold=0.9)
    small.add(ms, threshold=0.5 + 0.04 * i)
def light(n):
    gp.project(g)
    gp.basis_size, gp.param_count
    small.project(ms[0])
    small.project_rows(ms[:4])
    small.basis
run(heavy, light, 10)
b = gp.basis
np.testing.assert_allclose(b @ b.T, np.eye(len(b)), atol=1e-4)
""",
    "lambda": """
a = AdaptiveLambda(1.0, 1e-3, 1e3)
e = EwcPlusPlus(70_000)
g = np.ones((2, 70_000), dtype=np.float32)
def heavy(i):
    a.update(0.9 - 0.05 * (i % 3), 0.5)
    e.update_fisher_batch(g)
    e.lambda_ = a.value
def light(n):
    a.value, a.probe_max, a.lambda_min, a.lambda_max
    if n % 50 == 0:
        a.reset_probe()
run(heavy, light, 200)
assert 1e-3 <= a.value <= 1e3
""",
    "kernels": """
# Module functions hold no lock; two threads still get the right numbers.
a = rng.normal(size=70_000).astype(np.float32)
want = float(np.dot(a.astype(np.float64), a))
def heavy(i):
    assert abs(kernels.dot(a, a) - want) < 1e-3 * want
    assert abs(float(np.linalg.norm(kernels.normalize(a))) - 1) < 1e-5
def light(n):
    assert abs(kernels.cosine(a, a) - 1) < 1e-5
run(heavy, light, 50)
""",
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_two_threads_on_one_object_never_hang(name: str) -> None:
    script = PRELUDE + textwrap.dedent(SCENARIOS[name]) + "\nprint('OK')\n"
    try:
        out = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name}: two threads on one object hung (deadlock)")
    assert out.returncode == 0 and out.stdout.strip() == "OK", out.stderr[-3000:]
