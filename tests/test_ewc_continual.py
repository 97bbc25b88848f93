"""Fast variant of the continual-learning benchmark (design §11.2): direction of the result only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sona import cli
from sona.evals import continual


@pytest.fixture(autouse=True)
def _one_blas_thread() -> object:
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


def test_metrics_follow_spec_formulas() -> None:
    r = np.array([[0.9, 0.1, 0.1], [0.7, 0.95, 0.2], [0.6, 0.8, 0.9]])
    m = continual.metrics(r)
    assert m["ACC"] == pytest.approx(100 * (0.6 + 0.8 + 0.9) / 3)
    assert m["BWT"] == pytest.approx(100 * ((0.6 - 0.9) + (0.8 - 0.95)) / 2)
    assert m["forgetting"] == pytest.approx(100 * ((0.9 - 0.6) + (0.95 - 0.8)) / 2)
    assert m["LA"] == pytest.approx(100 * (0.9 + 0.95 + 0.9) / 3)


def test_tasks_are_permutations_and_pairs() -> None:
    perm, k = continual.make_tasks("permuted", 0, 3)
    assert k == 10 and len(perm) == 3
    # Same images, different pixel order: the sorted pixel multiset of each image is unchanged.
    np.testing.assert_array_equal(
        np.sort(perm[0].x_train, axis=1), np.sort(perm[2].x_train, axis=1)
    )
    assert not np.array_equal(perm[0].x_train, perm[1].x_train)
    split, k = continual.make_tasks("split", 0, 5)
    assert k == 2 and all(set(np.unique(t.y_train)) == {0, 1} for t in split)


def test_ewc_forgets_clearly_less_than_no_protection_on_permuted_digits() -> None:
    cfg = continual.ContinualConfig(hidden=256, epochs=6, n_tasks=3, fisher_batch=8)
    tasks, n_classes = continual.make_tasks("permuted", 0, cfg.n_tasks)
    r_none, _ = continual.run_method("none", tasks, n_classes, cfg, 0, 0.0)
    r_ewc, curve = continual.run_method("ewc", tasks, n_classes, cfg, 0, 100.0)
    none, ewc = continual.metrics(r_none), continual.metrics(r_ewc)
    # Learning happened (chance is 10%) with and without protection.
    assert none["LA"] > 85 and ewc["LA"] > 80
    # Forgetting without protection is large; EWC++ keeps clearly more of the old tasks.
    assert none["forgetting"] > 15
    assert ewc["forgetting"] < 0.6 * none["forgetting"]
    assert ewc["ACC"] > none["ACC"] + 5
    assert len(curve) == cfg.n_tasks * cfg.epochs


def test_cli_writes_tables_json_and_plot(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_png = tmp_path / "c.json", tmp_path / "c.png"
    code = cli.main(
        [
            "eval",
            "continual",
            "--benchmark",
            "split",
            "--seeds",
            "1",
            "--tasks",
            "2",
            "--epochs",
            "1",
            "--methods",
            "none",
            "ewc",
            "joint",
            "--no-progress",
            "--json",
            str(out_json),
            "--plot",
            str(out_png),
        ]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "forgetting" in text and "R[i][j]" in text
    data = json.loads(out_json.read_text())
    res = data["results"]["split"]
    assert set(res) == {"none", "ewc", "joint"}
    assert np.array(res["ewc"]["R_mean"]).shape == (2, 2)
    assert out_png.stat().st_size > 1000


def test_adaptive_lambda_method_runs_and_unknown_names_are_rejected() -> None:
    cfg = continual.ContinualConfig(hidden=32, epochs=2, n_tasks=2)
    tasks, n_classes = continual.make_tasks("permuted", 1, cfg.n_tasks)
    r, _ = continual.run_method("ewc-adaptive", tasks, n_classes, cfg, 1, 50.0)
    assert r.shape == (2, 2) and r[0, 0] > 0.5
    with pytest.raises(ValueError, match="unknown method"):
        continual.run_method("magic", tasks, n_classes, cfg, 1, 1.0)
    with pytest.raises(ValueError, match="unknown benchmark"):
        continual.make_tasks("rotated", 0)


def test_closed_form_fisher_matches_per_sample_gradients() -> None:
    from sona.evals._mlp import MLP

    rng = np.random.default_rng(3)
    model = MLP(7, 5, 4, rng)
    x = rng.random((13, 7)).astype(np.float32)
    y = rng.integers(0, 4, 13)
    # Empirical Fisher: mean squared per-sample gradient at the observed labels.
    g = model.per_sample_grads(x, rng, y)
    np.testing.assert_allclose(model.fisher_diag(x, y, chunk=5), (g**2).mean(axis=0), atol=1e-6)
    # True Fisher: the expectation over the model's own predictive distribution, class by class.
    p = model._forward(x)[2]
    true = sum(
        p[:, [c]] * model.per_sample_grads(x, rng, np.full(13, c)) ** 2 for c in range(4)
    ).mean(axis=0)
    np.testing.assert_allclose(model.fisher_diag(x, chunk=4), true, atol=1e-6)


def test_final_fisher_modes_and_floor_run() -> None:
    tasks, n_classes = continual.make_tasks("permuted", 2, 2)
    for fisher in continual.FISHER_MODES:
        cfg = continual.ContinualConfig(hidden=32, epochs=2, n_tasks=2, fisher=fisher)
        r, _ = continual.run_method("ewc", tasks, n_classes, cfg, 2, 50.0)
        assert r.shape == (2, 2) and r[0, 0] > 0.5
    cfg = continual.ContinualConfig(hidden=32, epochs=2, n_tasks=2, fisher_floor=1e-5)
    r, _ = continual.run_method("ewc", tasks, n_classes, cfg, 2, 50.0)
    assert r[1, 1] > 0.5
    with pytest.raises(ValueError, match="unknown fisher mode"):
        bad = continual.ContinualConfig(hidden=32, epochs=1, n_tasks=2, fisher="magic")
        continual.run_method("ewc", tasks, n_classes, bad, 2, 50.0)
