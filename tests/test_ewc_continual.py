"""Fast variant of the continual-learning benchmark (design §11.2): direction of the result only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from sona import _sona, cli
from sona.errors import SonaError
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


def test_protection_forgets_less_than_none_on_permuted_digits() -> None:
    cfg = continual.ContinualConfig(epochs=4, n_tasks=3, split="val")
    tasks, n_classes = continual.make_tasks("permuted", 0, cfg.n_tasks)
    res = {
        m: continual.metrics(continual.run_method(m, tasks, n_classes, cfg, 0, 100.0)[0])
        for m in ("none", "ewc", "gpm", "replay", "dream")
    }
    # Learning happened (chance is 10%) and, without protection, old tasks are forgotten.
    assert res["none"]["LA"] > 80 and res["ewc"]["LA"] > 75 and res["gpm"]["LA"] > 75
    assert res["none"]["forgetting"] > 10
    for m in ("ewc", "gpm", "replay", "dream"):
        assert res[m]["forgetting"] < 0.7 * res["none"]["forgetting"], (m, res)


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


def test_unknown_names_are_rejected() -> None:
    cfg = continual.ContinualConfig(epochs=1, n_tasks=2)
    tasks, n_classes = continual.make_tasks("permuted", 1, cfg.n_tasks)
    with pytest.raises(ValueError, match="unknown method"):
        continual.run_method("magic", tasks, n_classes, cfg, 1, 1.0)
    with pytest.raises(ValueError, match="unknown benchmark"):
        continual.make_tasks("rotated", 0)
    cfg.split = "train"
    with pytest.raises(ValueError, match="unknown split"):
        continual.run_method("none", tasks, n_classes, cfg, 1, 1.0)
    cfg.split = "val"
    cfg.later_epochs = {"ewc+replay": 0}
    with pytest.raises(ValueError, match="epochs must be"):
        continual.run_method("ewc+replay", tasks, n_classes, cfg, 1, 1.0)
    cfg.later_epochs = {}
    cfg.epochs = -1
    with pytest.raises(ValueError, match="epochs must be"):
        continual.run_method("none", tasks, n_classes, cfg, 1, 1.0)


def _blobs(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    x = (rng.normal(0, 0.3, (n, 6)) + np.eye(3, 6)[y] * 2).astype(np.float32)
    return x, y


def test_router_classifier_learns_and_rejects_bad_input_unchanged() -> None:
    x, y = _blobs()
    m = _sona.RouterClassifier(6, 3, hidden=16, rank_w=6, lr=1e-2, replay_capacity=50, seed=1)
    m.fit(x, y, epochs=10, batch=16)
    assert m.accuracy(x, y) > 0.95
    assert m.predict(x).dtype == np.int64 and m.predict(x).shape == (len(y),)
    m.remember(x, y)
    assert m.stored == 50
    assert set(m.dream(steps=5, synthetic=16)) >= {"accepted", "probe_before", "probe_after"}
    before = m.predict(x)
    bad_x = x.copy()
    bad_x[0, 0] = np.nan
    with pytest.raises(SonaError):
        m.fit(bad_x, y)
    with pytest.raises(SonaError):
        m.fit(x, y[:-1])
    with pytest.raises(SonaError):
        m.fit(x, np.where(y == 0, 3, y))
    with pytest.raises(SonaError):
        m.fit(x, np.where(y == 0, -1, y))
    with pytest.raises(SonaError):
        m.fit(x[:, :5].copy(), y)
    with pytest.raises(SonaError):
        m.fit(x, y, epochs=0)
    with pytest.raises(SonaError):
        m.fit(x, y, batch=0)
    with pytest.raises(SonaError):
        m.predict(x.astype(np.float64))
    with pytest.raises(SonaError):
        m.remember(bad_x, y)
    with pytest.raises(SonaError):
        m.dream(steps=-1 + 2**40)
    np.testing.assert_array_equal(m.predict(x), before)
    with pytest.raises(SonaError):
        _sona.RouterClassifier(6, 1)
    with pytest.raises(SonaError):
        _sona.RouterClassifier(6, 3, lr=float("nan"))
    with pytest.raises(SonaError):
        _sona.RouterClassifier(6, 3).dream()


@pytest.mark.parametrize("protection", ["ewc+replay", "gpm"])
def test_router_classifier_from_two_threads(protection: str) -> None:
    import threading

    x, y = _blobs(60)
    gpm = protection == "gpm"
    m = (
        _sona.RouterClassifier(6, 3, hidden=16, rank_w=6, gpm_threshold=0.9)
        if gpm
        else _sona.RouterClassifier(6, 3, hidden=16, rank_w=6, ewc_lambda=10.0, replay_capacity=30)
    )
    # Learned before the threads start: once GPM protects these inputs, later steps cannot move
    # the outputs on them, so how far the threads' interleaving got before the first `end_task`
    # must not decide the accuracy.
    m.fit(x, y, epochs=10, batch=8)
    assert m.accuracy(x, y) > 0.8
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                m.fit(x, y, epochs=1, batch=8)
                if not gpm:
                    m.remember(x, y)
                m.end_task(x if gpm else None)
                m.accuracy(x, y)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and m.accuracy(x, y) > 0.8
    if gpm:
        assert m.gpm_bases is not None and m.gpm_bases[0] == 10
    else:
        assert m.stored == 30


def test_gpm_on_split_digits_forgets_less_at_the_same_learning_accuracy() -> None:
    """The domain-incremental case the diagonal penalty barely helps: GPM's projection keeps
    earlier pairs with new-task accuracy close to no protection (wider router, as benchmarked)."""
    cfg = continual.ContinualConfig(n_tasks=3, split="val", hidden=256, rank_w=64)
    tasks, n_classes = continual.make_tasks("split", 1, cfg.n_tasks)
    none = continual.metrics(continual.run_method("none", tasks, n_classes, cfg, 1, 0.0)[0])
    gpm = continual.metrics(continual.run_method("gpm", tasks, n_classes, cfg, 1, 0.0, 0.95)[0])
    assert none["forgetting"] > 10, none
    assert gpm["forgetting"] < 0.5 * none["forgetting"], (gpm, none)
    assert gpm["LA"] > none["LA"] - 4, (gpm, none)


def test_gpm_needs_the_task_inputs_and_reports_its_bases() -> None:
    x, y = _blobs(60)
    m = _sona.RouterClassifier(6, 3, hidden=16, rank_w=6, gpm_threshold=0.9, gpm_examples=32)
    assert _sona.RouterClassifier(6, 3, hidden=16, rank_w=6).gpm_bases is None
    assert m.gpm_bases == (0, [0, 0, 0])
    m.fit(x, y, epochs=2, batch=8)
    with pytest.raises(SonaError, match="needs the task's inputs"):
        m.end_task()
    with pytest.raises(SonaError):
        m.end_task(x[:, :5].copy())
    bad = x.copy()
    bad[1, 1] = np.inf
    with pytest.raises(SonaError):
        m.end_task(bad)
    assert m.gpm_bases == (0, [0, 0, 0])
    m.end_task(x)
    tasks, sizes = m.gpm_bases
    assert tasks == 1 and all(0 < k for k in sizes) and sizes[0] <= 6 and sizes[1] <= 6
    for bad_threshold in (-0.1, 1.5, float("nan")):
        with pytest.raises(SonaError):
            _sona.RouterClassifier(6, 3, hidden=16, rank_w=6, gpm_threshold=bad_threshold)
    with pytest.raises(SonaError):
        _sona.RouterClassifier(6, 3, hidden=16, rank_w=6, gpm_threshold=0.9, gpm_examples=0)


def test_ending_a_task_twice_is_harmless() -> None:
    """A second end_task with no training since has nothing new for EWC++ to protect."""
    x, y = _blobs(30)
    m = _sona.RouterClassifier(6, 3, hidden=16, rank_w=6, ewc_lambda=10.0, replay_capacity=10)
    m.fit(x, y, epochs=1, batch=8)
    m.end_task()
    before = m.accuracy(x, y)
    m.end_task()
    assert m.accuracy(x, y) == before


def test_later_epochs_apply_per_method_from_the_second_task() -> None:
    cfg = continual.ContinualConfig(
        epochs=1, n_tasks=3, split="val", hidden=16, rank_w=8, later_epochs={"replay": 3}
    )
    assert [continual.task_epochs(cfg, "replay", t) for t in range(3)] == [1, 3, 3]
    assert [continual.task_epochs(cfg, "none", t) for t in range(3)] == [1, 1, 1]
    # The default gives ewc+replay its validated 20 epochs on later tasks, nothing else.
    default = continual.ContinualConfig()
    assert continual.task_epochs(default, "ewc+replay", 1) == 20
    assert continual.task_epochs(default, "ewc", 1) == default.epochs
    tasks, n_classes = continual.make_tasks("split", 0, cfg.n_tasks)
    # One evaluation per epoch: 1 + 3 + 3 for the method with later epochs, 3 without.
    _, curve = continual.run_method("replay", tasks, n_classes, cfg, 0, 0.0)
    assert len(curve) == 7
    _, curve = continual.run_method("none", tasks, n_classes, cfg, 0, 0.0)
    assert len(curve) == 3


def test_cli_width_and_later_epochs_reach_the_config() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    continual.add_arguments(parser)
    flags = "--hidden 64 --rank-w 16 --later-epochs 7 --gpm-threshold 0.9 --first-seed 5"
    args = parser.parse_args(flags.split())
    cfg = continual.config_from_args(args)
    assert (cfg.hidden, cfg.rank_w) == (64, 16)
    assert cfg.gpm_thresholds == {"permuted": 0.9, "split": 0.9} and cfg.first_seed == 5
    with pytest.raises(SonaError, match="gpm-threshold"):
        continual.config_from_args(parser.parse_args(["--gpm-threshold", "1.5"]))
    with pytest.raises(SonaError, match="first-seed"):
        continual.config_from_args(parser.parse_args(["--first-seed", "-1"]))
    assert cfg.later_epochs == {"ewc+replay": 7}
    default = continual.config_from_args(parser.parse_args([]))
    assert default.later_epochs == {"ewc+replay": 20}
    assert (default.hidden, default.rank_w) == (128, 32)
    wide = continual.config_from_args(parser.parse_args(["--router", "wide"]))
    assert (wide.hidden, wide.rank_w) == (512, 64)
    assert wide.lambdas == {"permuted": 500.0, "split": 2000.0}
    assert wide.gpm_thresholds == {"permuted": 0.99, "split": 0.95}
    assert wide.lambdas_with_replay == default.lambdas_with_replay
    # Explicit sizes and λ win over the preset's.
    narrowed = continual.config_from_args(
        parser.parse_args(["--router", "wide", "--hidden", "256", "--lambda", "7"])
    )
    assert (narrowed.hidden, narrowed.rank_w) == (256, 64) and narrowed.lambdas["split"] == 7.0
    with pytest.raises(SonaError, match="unknown router preset"):
        continual.router_config("narrow")


def test_plot_places_curves_of_methods_with_different_epochs(tmp_path: Path) -> None:
    cfg = continual.ContinualConfig(
        benchmarks=("split",),
        methods=("none", "replay"),
        seeds=1,
        n_tasks=2,
        epochs=1,
        hidden=16,
        rank_w=8,
        later_epochs={"replay": 3},
    )
    res = continual.run(cfg, progress=False)
    curves = {m: r["curve_task1"] for m, r in res["results"]["split"].items()}
    assert len(curves["none"]) == 2 and len(curves["replay"]) == 4
    out = tmp_path / "p.png"
    continual.plot(res, str(out))
    assert out.stat().st_size > 1000
