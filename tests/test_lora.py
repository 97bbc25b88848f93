"""sona.lora: forward, exact gradients, learning, merge, PEFT files, quantised copies, bad input."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import sona
from sona.lora import BaseLoRA, MicroLoRA, TwoTierLoRA, load_quantized, read_peft

Q = "model.layers.0.self_attn.q_proj"


def trained(d: int = 12, rank: int = 2, seed: int = 1, **kw: float) -> MicroLoRA:
    """A micro adapter with non-zero B (so every gradient is non-zero)."""
    m = MicroLoRA(d, rank=rank, seed=seed, alpha=4.0, **kw)
    rng = np.random.default_rng(seed)
    m.set_weights(m.lora_A, rng.standard_normal((d, rank)).astype(np.float32) * 0.3)
    return m


def test_init_matches_spec() -> None:
    m = MicroLoRA(512, rank=4, alpha=8.0, seed=3)
    assert m.scale == 2.0
    assert m.lora_A.shape == (4, 512) and m.lora_B.shape == (512, 4)
    assert np.all(m.lora_B == 0)
    assert abs(float(np.var(m.lora_A)) * 512 - 1.0) < 0.1
    x = np.random.default_rng(0).standard_normal(512).astype(np.float32)
    np.testing.assert_array_equal(m.forward(x), x)  # identity W, ΔW = 0


def test_forward_matches_numpy_for_all_base_maps(rng: np.random.Generator) -> None:
    d_in, d_out = 10, 7
    W = rng.standard_normal((d_out, d_in)).astype(np.float32)
    for m, Wm in (
        (MicroLoRA(d_in, d_out, W=W, seed=2), W),
        (MicroLoRA(d_in, d_out, W="zero", seed=2), np.zeros((d_out, d_in), np.float32)),
    ):
        m.set_weights(m.lora_A, rng.standard_normal((d_out, 2)).astype(np.float32))
        x = rng.standard_normal(d_in).astype(np.float32)
        want = Wm @ x + m.scale * m.lora_B @ (m.lora_A @ x)
        np.testing.assert_allclose(m.forward(x), want, rtol=1e-5, atol=1e-5)
        X = rng.standard_normal((5, d_in))  # float64 is converted
        np.testing.assert_allclose(
            m.forward_batch(X), (X @ Wm.T + m.scale * X @ m.lora_A.T @ m.lora_B.T), rtol=1e-4
        )
        np.testing.assert_allclose(m.delta_w(), m.scale * m.lora_B @ m.lora_A, rtol=1e-5)
        assert abs(m.delta_norm() - np.linalg.norm(m.delta_w())) < 1e-4


def test_gradients_match_finite_differences(rng: np.random.Generator) -> None:
    d_in, d_out = 9, 6
    W = rng.standard_normal((d_out, d_in)).astype(np.float32)
    m = MicroLoRA(d_in, d_out, W=W, alpha=3.0, seed=4)
    A0 = m.lora_A.astype(np.float64)
    B0 = rng.standard_normal((d_out, 2))
    m.set_weights(A0, B0)
    x = rng.standard_normal(d_in)
    target = rng.standard_normal(d_out)

    def loss(A: np.ndarray, B: np.ndarray, xv: np.ndarray) -> float:
        y = W.astype(np.float64) @ xv + m.scale * B @ (A @ xv)
        return 0.5 * float(np.sum((y - target) ** 2))

    e = (W @ x + m.scale * B0 @ (A0 @ x)) - target
    gA, gB, gx = m.gradients(x, e)
    h = 1e-5
    for (i, j), _ in np.ndenumerate(A0):
        Ap, Am = A0.copy(), A0.copy()
        Ap[i, j] += h
        Am[i, j] -= h
        assert abs(gA[i, j] - (loss(Ap, B0, x) - loss(Am, B0, x)) / (2 * h)) < 1e-3
    for (i, j), _ in np.ndenumerate(B0):
        Bp, Bm = B0.copy(), B0.copy()
        Bp[i, j] += h
        Bm[i, j] -= h
        assert abs(gB[i, j] - (loss(A0, Bp, x) - loss(A0, Bm, x)) / (2 * h)) < 1e-3
    for j in range(d_in):
        xp, xm = x.copy(), x.copy()
        xp[j] += h
        xm[j] -= h
        assert abs(gx[j] - (loss(A0, B0, xp) - loss(A0, B0, xm)) / (2 * h)) < 1e-3


def test_gradient_updates_learn_an_input_dependent_map(rng: np.random.Generator) -> None:
    # Two input directions must map to two different targets: only a learned A and B can do it.
    d = 16
    m = MicroLoRA(d, rank=2, alpha=2.0, lr=0.05, seed=5)
    xs = [np.eye(d, dtype=np.float32)[0], np.eye(d, dtype=np.float32)[1]]
    ts = [np.eye(d, dtype=np.float32)[5] * 2, -np.eye(d, dtype=np.float32)[7] * 2]

    def err() -> float:
        return sum(float(np.sum((m.forward(x) - t) ** 2)) for x, t in zip(xs, ts, strict=True))

    before = err()
    for _ in range(300):
        for x, t in zip(xs, ts, strict=True):
            m.update(x, m.forward(x) - t)
    assert err() < 0.05 * before
    assert m.counters()["updates"] == 600
    assert np.linalg.norm(m.lora_A - MicroLoRA(d, rank=2, seed=5).lora_A) > 0.1  # A learned too


def test_reward_learning_beats_no_learning(rng: np.random.Generator) -> None:
    d = 32
    target = np.zeros(d, np.float32)
    target[3] = 1.0
    m = MicroLoRA(d, rank=1, alpha=8.0, lr=2e-3, sigma=0.2, seed=6)
    x = np.zeros(d, np.float32)
    x[0] = 1.0

    def cos(y: np.ndarray) -> float:
        return float(y @ target / np.linalg.norm(y))

    start = cos(m.forward(x))
    for _ in range(1500):
        y, token = m.forward(x, explore=True)
        m.reward(token, (1 + cos(y)) / 2)
    assert cos(m.forward(x)) > start + 0.4
    assert m.counters()["rewards"] == 1500


def test_bad_input_raises_and_leaves_weights_unchanged(rng: np.random.Generator) -> None:
    m = trained()
    A, B = m.lora_A, m.lora_B
    x = rng.standard_normal(12).astype(np.float32)
    bad_calls = [
        (sona.DimensionError, lambda: m.forward(np.ones(11))),
        (sona.DimensionError, lambda: m.forward(np.ones((2, 12)))),
        (sona.NonFiniteError, lambda: m.forward(np.full(12, np.nan))),
        (sona.DimensionError, lambda: m.update(x, np.ones(5))),
        (sona.NonFiniteError, lambda: m.update(x, np.full(12, np.inf))),
        (sona.DimensionError, lambda: m.forward_batch(np.ones((3, 11)))),
        (sona.DimensionError, lambda: m.set_weights(np.ones((3, 12)), np.ones((12, 3)))),
        (sona.InvalidInputError, lambda: m.forward(np.array(["a"] * 12))),
    ]
    for exc, call in bad_calls:
        with pytest.raises(exc):
            call()
    _y, token = m.forward(x, explore=True)
    with pytest.raises(sona.InvalidInputError):
        m.reward(token, 1.5)
    with pytest.raises(sona.InvalidInputError):
        m.reward(token, float("nan"))
    with pytest.raises(sona.UnknownIdError):
        m.reward(token + 1000, 0.5)
    with pytest.raises(sona.UnknownIdError, match=r"token id -1\b"):
        m.reward(-1, 0.5)
    np.testing.assert_array_equal(m.lora_A, A)
    np.testing.assert_array_equal(m.lora_B, B)
    m.reward(token, 0.5)
    with pytest.raises(sona.UnknownIdError):  # reused
        m.reward(token, 0.5)
    # A step that would overflow is refused, counted, and not applied.
    A, B = m.lora_A, m.lora_B
    with pytest.raises(sona.NumericalError):
        m.update(np.full(12, 1e30, np.float32), np.full(12, 1e30, np.float32))
    assert m.counters()["rejected"] == 1
    np.testing.assert_array_equal(m.lora_A, A)
    np.testing.assert_array_equal(m.lora_B, B)


def test_bad_configuration() -> None:
    for kw in (
        dict(rank=0),
        dict(rank=13),
        dict(alpha=float("nan")),
        dict(lr=-1.0),
        dict(momentum=1.0),
        dict(sigma=0.0),
        dict(capacity=0),
    ):
        with pytest.raises(sona.ConfigError):
            MicroLoRA(12, **kw)  # type: ignore[arg-type]
    with pytest.raises(sona.ConfigError):
        MicroLoRA(12, 8)  # identity W needs d_in == d_out
    with pytest.raises(sona.DimensionError):
        MicroLoRA(12, 8, W=np.ones((12, 8)))


def test_evicted_tokens_are_unknown() -> None:
    m = MicroLoRA(8, capacity=4, seed=1)
    x = np.ones(8, np.float32)
    first = m.forward(x, explore=True)[1]
    for _ in range(4):
        m.forward(x, explore=True)
    with pytest.raises(sona.UnknownIdError):
        m.reward(first, 0.5)


def test_bound_and_counters() -> None:
    m = MicroLoRA(16, rank=2, alpha=4.0, lr=0.5, max_norm=0.5, seed=2)
    x = np.ones(16, np.float32) / 4
    for _ in range(50):
        m.update(x, -np.ones(16, np.float32))
    assert m.delta_norm() <= 0.5 + 1e-4
    step = m.last_step()
    assert step is not None and step["bounded"]


def test_merge_matches_sum_within_discarded_mass(rng: np.random.Generator) -> None:
    d = 24
    base = BaseLoRA(d, rank=4, alpha=8.0, seed=1)
    base.set_weights(base.lora_A, rng.standard_normal((d, 4)).astype(np.float32))
    micro = trained(d, rank=2, seed=3)
    total = base.delta_w() + micro.delta_w()
    report = micro.merge_into(base)
    err = float(np.linalg.norm(base.delta_w() - total))
    assert report["discarded"] > 0
    assert abs(err - report["discarded"]) < 1e-3 * (1 + report["total_norm"])
    sv = np.linalg.svd(total, compute_uv=False)
    np.testing.assert_allclose(report["singular_values"][:6], sv[:6], rtol=1e-3, atol=1e-4)
    assert abs(report["discarded_fraction"] - np.sum(sv[4:] ** 2) / np.sum(sv**2)) < 1e-3
    assert np.all(micro.lora_B == 0)
    assert base.counters()["merges"] == 1
    with pytest.raises(sona.DimensionError):
        base.merge_from(MicroLoRA(8))


def test_two_tier_merges_on_schedule(rng: np.random.Generator) -> None:
    tt = TwoTierLoRA(16, base_rank=4, micro_rank=2, merge_every=10, seed=1)
    x = rng.standard_normal(16).astype(np.float32)
    for _ in range(25):
        _y, token = tt.forward(x, explore=True)
        tt.reward(token, 0.6)
    assert tt.base.counters()["merges"] == 2
    assert tt.last_merge() is not None
    np.testing.assert_allclose(
        tt.forward(x), x + (tt.base.delta_w() + tt.micro.delta_w()) @ x, rtol=1e-4, atol=1e-5
    )


def test_forward_never_waits_for_updates() -> None:
    # Readers on one thread, updates on another (the GIL is released only between calls, so this
    # checks consistency and liveness; the Rust test `readers_are_not_blocked_by_a_held_writer_lock`
    # checks that a forward proceeds while the writer lock is held).
    d = 64
    m = MicroLoRA(d, rank=2, alpha=4.0, lr=0.01, seed=3)
    x = np.ones(d, np.float32) / 8
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            while not stop.is_set():
                m.update(x, -np.ones(d, np.float32))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    t = threading.Thread(target=writer)
    t.start()
    try:
        for _ in range(2000):
            y = m.forward(x)
            # Every update adds a multiple of the all-ones vector to each column of B, so any
            # published version gives y - x constant across coordinates.
            diff = y - x
            assert np.all(np.isfinite(diff))
            assert np.ptp(diff) < 1e-4 * (1 + np.abs(diff).max())
    finally:
        stop.set()
        t.join()
    assert not errors
    assert m.counters()["updates"] > 0


def test_peft_round_trip_is_bit_exact_and_readable_by_safetensors(tmp_path: Path) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    m = trained(12, rank=3, seed=7)
    q = "model.layers.0.self_attn.q_proj"
    m.save_peft(tmp_path / "ad", module=q)
    files = sorted(p.name for p in (tmp_path / "ad").iterdir())
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    tensors = safetensors_numpy.load_file(str(tmp_path / "ad" / "adapter_model.safetensors"))
    a = tensors[f"base_model.model.{q}.lora_A.weight"]
    b = tensors[f"base_model.model.{q}.lora_B.weight"]
    assert a.shape == (3, 12) and b.shape == (12, 3) and a.dtype == np.float32
    np.testing.assert_array_equal(a, m.lora_A)
    np.testing.assert_array_equal(b, m.lora_B)
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and cfg["r"] == 3 and cfg["lora_alpha"] == 4.0
    assert cfg["target_modules"] == [q]

    other = MicroLoRA(12, rank=3, alpha=4.0, seed=99)
    other.load_peft(tmp_path / "ad")
    assert other.lora_A.tobytes() == m.lora_A.tobytes()
    assert other.lora_B.tobytes() == m.lora_B.tobytes()
    x = np.linspace(-1, 1, 12, dtype=np.float32)
    assert other.forward(x).tobytes() == m.forward(x).tobytes()
    fresh = BaseLoRA.from_peft(tmp_path / "ad")
    assert fresh.rank == 3 and fresh.lora_B.tobytes() == m.lora_B.tobytes()
    module, alpha, a2, _ = read_peft(tmp_path / "ad")
    assert module == q and alpha == 4.0 and a2.tobytes() == m.lora_A.tobytes()


def test_peft_written_by_safetensors_package_loads(
    tmp_path: Path, rng: np.random.Generator
) -> None:
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    a = rng.standard_normal((2, 8)).astype(np.float32)
    b = rng.standard_normal((8, 2)).astype(np.float32)
    d = tmp_path / "ext"
    d.mkdir()
    safetensors_numpy.save_file(
        {"base_model.model.q_proj.lora_A.weight": a, "base_model.model.q_proj.lora_B.weight": b},
        str(d / "adapter_model.safetensors"),
    )
    (d / "adapter_config.json").write_text(
        json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 16, "target_modules": ["q_proj"]})
    )
    m = BaseLoRA.from_peft(d)
    assert m.module == "q_proj" and m.scale == 8.0
    np.testing.assert_array_equal(m.lora_A, a)
    np.testing.assert_array_equal(m.lora_B, b)


def test_bad_peft_files_raise_checkpoint_error(tmp_path: Path) -> None:
    m = trained(12, rank=2, seed=8)
    d = tmp_path / "ad"
    m.save_peft(d, module="model.layers.1.mlp.up_proj")
    A, B = m.lora_A, m.lora_B
    with pytest.raises(sona.CheckpointError):  # rank mismatch
        MicroLoRA(12, rank=3, alpha=4.0).load_peft(d)
    with pytest.raises(sona.CheckpointError):  # alpha mismatch
        MicroLoRA(12, rank=2, alpha=5.0).load_peft(d)
    with pytest.raises(sona.CheckpointError):  # dimension mismatch
        MicroLoRA(16, rank=2, alpha=4.0).load_peft(d)
    raw = (d / "adapter_model.safetensors").read_bytes()
    (d / "adapter_model.safetensors").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(sona.CheckpointError):
        m.load_peft(d)
    (d / "adapter_model.safetensors").write_bytes(raw)
    (d / "adapter_config.json").write_text("{broken")
    with pytest.raises(sona.CheckpointError):
        m.load_peft(d)
    with pytest.raises(sona.CheckpointError):
        m.load_peft(tmp_path / "missing")
    np.testing.assert_array_equal(m.lora_A, A)
    np.testing.assert_array_equal(m.lora_B, B)


def test_quantized_copies_of_frozen_adapters(tmp_path: Path) -> None:
    m = trained(64, rank=4, seed=9)
    with pytest.raises(sona.InvalidInputError):  # still trainable
        m.save_quantized(tmp_path / "q.ckpt")
    m.freeze()
    with pytest.raises(sona.InvalidInputError):
        m.update(np.ones(64), np.ones(64))
    f16 = m.save_quantized(tmp_path / "f16.ckpt", kind="fp16")
    q4 = m.save_quantized(tmp_path / "q4.ckpt", kind="q4", group_size=16)
    assert f16["rel_error"] < 1e-3 < q4["rel_error"] < 0.2
    assert q4["payload_bytes"] < f16["payload_bytes"]
    back = load_quantized(tmp_path / "q4.ckpt")
    assert back.frozen
    err = np.linalg.norm(back.delta_w() - m.delta_w()) / np.linalg.norm(m.delta_w())
    assert abs(err - q4["rel_error"]) < 1e-3
    raw = bytearray((tmp_path / "q4.ckpt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "q4.ckpt").write_bytes(bytes(raw))
    with pytest.raises(sona.CheckpointError):
        load_quantized(tmp_path / "q4.ckpt")
    with pytest.raises(sona.ConfigError):
        m.save_quantized(tmp_path / "x.ckpt", kind="q4", group_size=1)


def test_save_load_resumes_training_exactly(tmp_path: Path) -> None:
    a = MicroLoRA(16, seed=4, lr=0.01)
    x = np.linspace(-1, 1, 16, dtype=np.float32)
    for _ in range(5):
        _y, token = a.forward(x, explore=True)
        a.reward(token, 0.7)
    a.save(tmp_path / "m.ckpt")
    b = MicroLoRA.load(tmp_path / "m.ckpt")
    assert isinstance(b, MicroLoRA) and b.counters() == a.counters()
    ya, ta = a.forward(x, explore=True)
    yb, tb = b.forward(x, explore=True)
    np.testing.assert_array_equal(ya, yb)
    a.reward(ta, 0.2)
    b.reward(tb, 0.2)
    np.testing.assert_array_equal(a.lora_B, b.lora_B)
    raw = bytearray((tmp_path / "m.ckpt").read_bytes())
    raw[len(raw) // 3] ^= 0x10
    (tmp_path / "m.ckpt").write_bytes(bytes(raw))
    with pytest.raises(sona.CheckpointError):
        MicroLoRA.load(tmp_path / "m.ckpt")


def test_update_batch_fits_a_linear_map(rng: np.random.Generator) -> None:
    # A base adapter trained by batch steps learns a rank-2 correction from many samples.
    d = 12
    base = BaseLoRA(d, rank=2, alpha=2.0, lr=0.05, seed=1)
    U = rng.standard_normal((d, 2)) / 3
    V = rng.standard_normal((2, d)) / 3
    X = rng.standard_normal((64, d)).astype(np.float32)
    T = X + X @ (U @ V).T

    def loss() -> float:
        return float(np.mean((base.forward_batch(X) - T) ** 2))

    before = loss()
    for _ in range(300):
        base.update_batch(X, base.forward_batch(X) - T)
    assert loss() < 0.05 * before
    with pytest.raises(sona.DimensionError):
        base.update_batch(X, np.zeros((63, d)))
    with pytest.raises(sona.NonFiniteError):
        base.update_batch(X, np.full((64, d), np.nan))


def test_classes_and_functions_are_the_extensions_own() -> None:
    import inspect

    from sona import _sona, lora

    for name in lora.__all__:
        if name != "MergeReport":
            obj = getattr(lora, name)
            assert obj is getattr(_sona, name) and obj.__module__ == "sona.lora", name
            assert obj.__doc__ and len(obj.__doc__) > 40, name
    assert issubclass(MicroLoRA, lora.LoRA) and issubclass(BaseLoRA, lora.LoRA)
    with pytest.raises(TypeError):
        lora.LoRA()  # only its tiers are constructed
    params = list(inspect.signature(MicroLoRA).parameters)
    assert params[:3] == ["d_in", "d_out", "rank"] and params[-2:] == ["W", "module"]
    # The defaults are the core configs' (LoraConfig::micro / base, ScaledDefaults).
    c = MicroLoRA(1024).config
    assert (c["rank"], c["alpha"], c["clip"], c["capacity"]) == (2, 20.0, 10.0, 256)
    assert (c["momentum"], c["decay"], c["baseline_rate"]) == pytest.approx((0.9, 1e-5, 0.05))
    assert (c["lr"], c["sigma"], c["max_norm"]) == pytest.approx((3e-4, 0.05, 64.0))
    assert c["module"] == "embedding" and c["base_map"] == "identity" and c["seed"] == 0
    b = BaseLoRA(1024).config
    assert (b["rank"], b["alpha"], b["max_norm"], b["decay"]) == (8, 16.0, float("inf"), 0.0)
    assert (b["lr"], b["sigma"]) == pytest.approx((1e-3, 0.1))  # a base's noise does not scale
    tt = TwoTierLoRA(1024)
    assert tt.merge_every == 1000 and (tt.base.rank, tt.micro.rank) == (8, 2)
    assert tt.base.config["seed"] == 0 and tt.micro.config["seed"] == 1


def test_tiers_keep_their_class_through_files_and_stacks(tmp_path: Path) -> None:
    base = BaseLoRA(8, rank=2, seed=3)
    base.save(tmp_path / "b.ckpt")
    back = BaseLoRA.load(tmp_path / "b.ckpt")
    assert type(back) is BaseLoRA and back.lora_A.tobytes() == base.lora_A.tobytes()
    assert type(MicroLoRA.load(tmp_path / "b.ckpt")) is MicroLoRA
    assert repr(back) == "BaseLoRA(d_in=8, d_out=8, rank=2, alpha=16)"
    tt = TwoTierLoRA(8)
    assert tt.base is tt.base and type(tt.base) is BaseLoRA and type(tt.micro) is MicroLoRA
    x = np.ones(8, np.float32)
    y, token = tt.micro(x, explore=1)  # a truthy flag explores, as `if explore:` did
    assert y.shape == (8,) and isinstance(token, int)
    assert tt.micro.quant_kind is None and tt.micro.quant_error is None


def test_wrong_kinds_of_arguments_raise_sona_errors(tmp_path: Path) -> None:
    from sona.lora import default_lr, feedback_budget

    m = trained(8, rank=2, seed=2)
    before = m.lora_B.tobytes()
    frozen = trained(8, rank=2, seed=3)
    frozen.freeze()
    for make in (
        lambda: MicroLoRA(8, W="dense"),
        lambda: MicroLoRA(8, module=3),
        lambda: MicroLoRA(8, seed=-1),
        lambda: BaseLoRA(8, lr=None),
        lambda: TwoTierLoRA(8, merge_every=-1),
        lambda: TwoTierLoRA(8, base_alpha="1"),
        lambda: m.save_peft(tmp_path / "p", module=3),
        lambda: m.save_peft(tmp_path / "p", module=Q, layer=3),
        lambda: frozen.save_quantized(tmp_path / "q", kind=3),
        lambda: frozen.save_quantized(tmp_path / "q", kind="q8"),
        lambda: frozen.save_quantized(tmp_path / "q", group_size=5000),
        lambda: feedback_budget(8, -2),
    ):
        with pytest.raises(sona.ConfigError):
            make()
    with pytest.raises(sona.DimensionError):
        m.update_batch(np.ones((3, 8)), np.ones((2, 8)))
    with pytest.raises(sona.InvalidInputError):
        m.reward(1.0, 0.5)  # type: ignore[arg-type]
    with pytest.raises(sona.UnknownIdError):
        m.reward(0, 0.5)
    for missing in (
        lambda: MicroLoRA.load(tmp_path / "missing"),
        lambda: BaseLoRA.from_peft(tmp_path / "missing"),
        lambda: read_peft(tmp_path / "missing"),
        lambda: load_quantized(tmp_path / "missing"),
    ):
        with pytest.raises(sona.CheckpointError):
            missing()
    assert m.lora_B.tobytes() == before
    assert default_lr(1024, two_tier=1) == pytest.approx(6e-4)  # type: ignore[arg-type]
    _y, token = m.forward(np.ones(8), explore=True)
    m.reward(np.int64(token), np.float32(0.5))  # numpy scalars are ints and reals


def test_file_readers_take_settings_but_not_what_the_file_fixes(tmp_path: Path) -> None:
    m = trained(12, rank=3, seed=7)
    m.save_peft(tmp_path / "ad", module=Q)
    fresh = BaseLoRA.from_peft(tmp_path / "ad", lr=0.25, seed=4)
    assert fresh.config["lr"] == 0.25 and fresh.config["seed"] == 4
    assert fresh.module == Q and fresh.lora_B.tobytes() == m.lora_B.tobytes()
    with pytest.raises(sona.ConfigError, match="read from the file"):
        BaseLoRA.from_peft(tmp_path / "ad", rank=2)
    m.freeze()
    m.save_quantized(tmp_path / "q.ckpt", kind="fp16")
    q = load_quantized(tmp_path / "q.ckpt", lr=0.5)
    assert type(q) is BaseLoRA and q.frozen and q.config["lr"] == 0.5
    assert q.quant_kind == "fp16" and q.quant_error is not None and q.quant_error < 1e-3
    with pytest.raises(sona.ConfigError, match="read from the file"):
        load_quantized(tmp_path / "q.ckpt", alpha=1.0)
