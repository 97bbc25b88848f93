"""sona.lora under hostile input, threads and crafted files (issue 9, LoRA part).

Each test pins one defect found by probing the public API: huge or ill-typed sizes, torn reads
during merges, non-atomic rewards and merges, non-finite results from finite input, PEFT files that
other tools misread (or that SONA misread), and threads.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import sona
from sona.lora import BaseLoRA, MicroLoRA, TwoTierLoRA, read_peft

Q = "model.layers.0.self_attn.q_proj"


def trained(d: int = 12, rank: int = 2, seed: int = 1, **kw: Any) -> MicroLoRA:
    """A micro adapter with non-zero B."""
    m = MicroLoRA(d, rank=rank, seed=seed, alpha=4.0, **kw)
    rng = np.random.default_rng(seed)
    m.set_weights(m.lora_A, rng.standard_normal((d, rank)).astype(np.float32) * 0.3)
    return m


def state(m: Any) -> tuple[bytes, bytes, dict[str, int]]:
    """Weights and counters (without ``rejected``, which counts refusals by design)."""
    counters = dict(m.counters())
    counters.pop("rejected")
    return m.lora_A.tobytes(), m.lora_B.tobytes(), counters


def run_threads(targets: list[Callable[[], None]], timeout: float = 60.0) -> None:
    """Runs each target in its own thread; fails on any exception or on a hang."""
    errors: list[BaseException] = []

    def wrap(f: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                f()
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        return run

    threads = [threading.Thread(target=wrap(f), daemon=True) for f in targets]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads hung (deadlock?)"
    if errors:
        raise errors[0]


# --- 1. sizes and coercion --------------------------------------------------------------------


@pytest.mark.parametrize("size", [2**40, 2**63, 2**64 - 1, 2**64, 2**70, 1.5, "8", 8.0, True])
def test_sizes_are_config_errors_never_aborts(size: Any) -> None:
    for make in (
        lambda: MicroLoRA(size),
        lambda: BaseLoRA(size),
        lambda: TwoTierLoRA(size),
        lambda: MicroLoRA(8, rank=size),
        lambda: MicroLoRA(8, capacity=size),
        lambda: TwoTierLoRA(8, base_rank=size),
        lambda: TwoTierLoRA(8, capacity=size),
    ):
        with pytest.raises(sona.ConfigError):
            make()


def test_capacity_times_dim_is_bounded() -> None:
    with pytest.raises(sona.ConfigError):
        MicroLoRA(65536, capacity=2**20)


@pytest.mark.parametrize("value", ["0.5", None, b"1", [0.5]])
def test_rewards_and_settings_must_be_numbers(value: Any) -> None:
    m = MicroLoRA(8, seed=1)
    _y, token = m.forward(np.ones(8, np.float32), explore=True)
    before = state(m)
    with pytest.raises(sona.InvalidInputError):
        m.reward(token, value)
    with pytest.raises(sona.ConfigError):
        MicroLoRA(8, momentum=value)
    with pytest.raises(sona.InvalidInputError):
        m.reward(str(token), 0.5)
    assert state(m) == before
    with pytest.raises(sona.UnknownIdError):
        m.reward(2**70, 0.5)
    m.reward(token, 0.5)


# --- 2. torn reads during merges --------------------------------------------------------------


def test_forwards_from_python_threads_see_one_generation_during_merges() -> None:
    d = 384
    tt = TwoTierLoRA(d, base_rank=4, micro_rank=2, lr=0.05, max_norm=1e3, merge_every=0, seed=3)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(d) / np.sqrt(d)).astype(np.float32)
    e = rng.standard_normal(d).astype(np.float32)
    x64 = x.astype(np.float64)
    states: list[np.ndarray] = []
    micro_parts: list[float] = []

    def record() -> None:
        dw = tt.base.delta_w().astype(np.float64) + tt.micro.delta_w().astype(np.float64)
        states.append(x64 + dw @ x64)

    record()
    stop = threading.Event()
    seen: set[bytes] = set()  # distinct outputs: the published states plus any torn read
    count = [0]

    def reader() -> None:
        while not stop.is_set():
            seen.add(tt.forward(x).tobytes())
            count[0] += 1

    def writer() -> None:
        try:
            for _ in range(60):
                tt.update(x, e)
                record()
                micro_parts.append(float(np.abs(tt.micro.delta_w() @ x).max()))
                tt.merge()  # releases the GIL: readers run while it publishes
                record()
        finally:
            stop.set()

    run_threads([reader, reader, writer])
    assert count[0] > 100 and len(seen) > 10
    table = np.stack(states)
    scale = np.abs(table).max()
    # A torn read (new base + old micro, or old base + restarted micro) is off by a whole micro
    # correction, far above the rounding tolerance.
    tol = 1e-4 * scale
    assert min(micro_parts) > 10 * tol
    for raw in seen:
        y = np.frombuffer(raw, np.float32)
        dist = np.abs(table - y.astype(np.float64)).max(axis=1).min()
        assert dist < tol, f"a forward matched no published state (off by {dist})"


# --- 3. atomic operations ---------------------------------------------------------------------


def test_a_refused_reward_leaves_everything_as_it_was() -> None:
    m = MicroLoRA(8, seed=2)
    _y, token = m.forward(np.full(8, 1e25, np.float32), explore=True)
    before = state(m)
    with pytest.raises(sona.NumericalError):
        m.reward(token, 0.9)
    assert state(m) == before  # token, baseline, reward count, weights
    assert m.counters()["rejected"] == 1 and m.counters()["rewards"] == 0
    with pytest.raises(sona.NumericalError):  # still the same token, not "unknown"
        m.reward(token, 0.9)


def test_a_failing_merge_after_a_step_does_not_report_the_step_as_failed() -> None:
    tt = TwoTierLoRA(8, merge_every=1, seed=1)
    tt.base.freeze()
    x = np.full(8, 0.5, np.float32)
    before = tt.micro.lora_B.copy()
    tt.update(x, np.full(8, 0.1, np.float32))  # the step is applied: no error
    assert not np.array_equal(tt.micro.lora_B, before)
    count, message = tt.merge_failures()
    assert count == 1 and message is not None and "read-only" in message
    base_state, micro_state = state(tt.base), state(tt.micro)
    with pytest.raises(sona.InvalidInputError):
        tt.merge()
    assert (state(tt.base), state(tt.micro)) == (base_state, micro_state)


# --- 4. finite input, finite state ------------------------------------------------------------


def test_huge_finite_inputs_give_finite_outputs_or_numerical_error() -> None:
    x = np.full(16, 1e38, np.float32)
    m = MicroLoRA(16, seed=1)
    np.testing.assert_array_equal(m.forward(x), x)  # ΔW = 0: exactly x, although A x overflows
    m = trained(16, seed=2)
    tt = TwoTierLoRA(16, seed=1)
    tt.micro.set_weights(m.lora_A, m.lora_B)
    for f in (m.forward, tt.forward, lambda v: m.forward_batch(v[None, :])):
        try:
            y = f(x)
        except sona.NumericalError:
            continue
        assert np.all(np.isfinite(y))
    y = m.forward(np.full(16, 1e30, np.float32))
    assert np.all(np.isfinite(y))


def test_set_weights_refuses_absurd_factors() -> None:
    m = trained(8)
    before = state(m)
    for bad in (1e38, 2e4, -1e5):
        B = m.lora_B.copy()
        B[0, 0] = bad
        with pytest.raises(sona.NumericalError):
            m.set_weights(m.lora_A, B)
        A = m.lora_A.copy()
        A[1, 3] = bad
        with pytest.raises(sona.NumericalError):
            m.set_weights(A, m.lora_B)
    assert state(m) == before
    B = m.lora_B.copy()
    B[0, 0] = 1e4
    m.set_weights(m.lora_A, B)  # the bound itself is allowed


# --- 5. PEFT interop --------------------------------------------------------------------------


def test_peft_export_is_what_peft_expects(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.numpy")
    m = trained(12, rank=3, seed=7)
    d = tmp_path / "ad"
    m.save_peft(
        d,
        module=Q,
        task_type="CAUSAL_LM",
        base_model_name_or_path="hf-internal-testing/tiny-random-LlamaForCausalLM",
    )
    cfg = json.loads((d / "adapter_config.json").read_text())
    assert "sona" not in cfg
    assert cfg["task_type"] == "CAUSAL_LM"
    assert cfg["base_model_name_or_path"] == "hf-internal-testing/tiny-random-LlamaForCausalLM"
    assert cfg["target_modules"] == [Q] and cfg["fan_in_fan_out"] is False
    assert cfg["r"] == 3 and cfg["lora_alpha"] == 4.0 and cfg["peft_type"] == "LORA"
    assert cfg["use_rslora"] is False and cfg["use_dora"] is False and cfg["bias"] == "none"
    t = st.load_file(str(d / "adapter_model.safetensors"))
    assert sorted(t) == [
        f"base_model.model.{Q}.lora_A.weight",
        f"base_model.model.{Q}.lora_B.weight",
    ]
    # PEFT's forward: y = x + (lora_alpha / r) · B (A x); ours matches it to 1e-7.
    A = t[f"base_model.model.{Q}.lora_A.weight"].astype(np.float64)
    B = t[f"base_model.model.{Q}.lora_B.weight"].astype(np.float64)
    x = np.random.default_rng(1).standard_normal(12)
    want = x + cfg["lora_alpha"] / cfg["r"] * B @ (A @ x)
    got = m.forward(x.astype(np.float32)).astype(np.float64)
    assert np.abs(got - want).max() <= 1e-6 * np.abs(want).max()
    other = MicroLoRA(12, rank=3, alpha=4.0, seed=5)
    other.load_peft(d)
    assert other.lora_A.tobytes() == m.lora_A.tobytes()
    assert other.lora_B.tobytes() == m.lora_B.tobytes()


def test_short_module_names_and_bad_export_settings_are_refused(tmp_path: Path) -> None:
    m = trained(8)
    with pytest.raises(sona.ConfigError, match="full dotted path"):
        m.save_peft(tmp_path / "a", module="q_proj")
    with pytest.raises(sona.ConfigError, match="full dotted path"):
        m.save_peft(tmp_path / "a")  # the default module name "embedding" is short
    with pytest.raises(sona.ConfigError):
        m.save_peft(tmp_path / "a", module=Q, task_type="CHAT")
    with pytest.raises(sona.ConfigError):
        m.save_peft(tmp_path / "a", module=Q, layer="conv2d")  # type: ignore[arg-type]
    assert not (tmp_path / "a").exists()


def test_embedding_and_conv1d_targets(tmp_path: Path) -> None:
    st = pytest.importorskip("safetensors.numpy")
    m = trained(8)
    m.save_peft(tmp_path / "e", module="model.embed_tokens")
    t = st.load_file(str(tmp_path / "e" / "adapter_model.safetensors"))
    assert sorted(t) == [
        "base_model.model.model.embed_tokens.lora_embedding_A",
        "base_model.model.model.embed_tokens.lora_embedding_B",
    ]
    assert read_peft(tmp_path / "e")[2].tobytes() == m.lora_A.tobytes()
    m.save_peft(tmp_path / "c", module="transformer.h.0.attn.c_attn")
    assert json.loads((tmp_path / "c" / "adapter_config.json").read_text())["fan_in_fan_out"]
    m.save_peft(tmp_path / "l", module="transformer.h.0.attn.c_attn", layer="linear")
    assert not json.loads((tmp_path / "l" / "adapter_config.json").read_text())["fan_in_fan_out"]


def _edit_config(d: Path, **changes: Any) -> None:
    cfg = json.loads((d / "adapter_config.json").read_text())
    cfg.update(changes)
    (d / "adapter_config.json").write_text(json.dumps(cfg))


def test_peft_import_supports_rslora_and_patterns_and_refuses_the_rest(tmp_path: Path) -> None:
    m = trained(12, rank=4, seed=3)
    d = tmp_path / "ad"
    m.save_peft(d, module=Q)
    x = np.random.default_rng(2).standard_normal(12).astype(np.float32)
    A, B = m.lora_A.astype(np.float64), m.lora_B.astype(np.float64)

    def peft_forward(scale: float) -> np.ndarray:
        return x + scale * B @ (A @ x)

    _edit_config(d, use_rslora=True)
    r = BaseLoRA.from_peft(d)
    assert abs(r.scale - 4.0 / np.sqrt(4)) < 1e-6  # rsLoRA: lora_alpha / √r
    np.testing.assert_allclose(r.forward(x), peft_forward(2.0), rtol=1e-6, atol=1e-6)
    _edit_config(d, use_rslora=False, alpha_pattern={"q_proj": 8.0})
    np.testing.assert_allclose(
        BaseLoRA.from_peft(d).forward(x), peft_forward(2.0), rtol=1e-6, atol=1e-6
    )
    for change in (
        {"alpha_pattern": {"^model.*": 8.0}},
        {"alpha_pattern": {}, "use_dora": True},
        {"use_dora": False, "lora_bias": True},
        {"lora_bias": False, "bias": "all"},
        {"bias": "none", "modules_to_save": ["lm_head"]},
    ):
        _edit_config(d, **change)
        with pytest.raises(sona.CheckpointError):
            BaseLoRA.from_peft(d)
        with pytest.raises(sona.CheckpointError):
            m.load_peft(d)


def test_peft_bit_flips_are_refused(tmp_path: Path) -> None:
    m = trained(12, rank=2, seed=4)
    d = tmp_path / "ad"
    m.save_peft(d, module=Q)
    before = state(m)
    raw = (d / "adapter_model.safetensors").read_bytes()
    refused = 0
    for byte in range(len(raw) - 96, len(raw), 4):  # high byte of each of the last 24 floats
        flipped = bytearray(raw)
        flipped[byte + 3] ^= 0x40  # the top exponent bit: 0.3 becomes ~1e38
        (d / "adapter_model.safetensors").write_bytes(bytes(flipped))
        try:
            m.load_peft(d)
        except sona.CheckpointError:
            refused += 1
            assert state(m) == before
    assert refused == 24


# --- 6. threads -------------------------------------------------------------------------------


def test_two_threads_on_one_lora_adapter_above_every_threshold(tmp_path: Path) -> None:
    d, n = 256, 300  # batches of 76,800 floats; huge vectors take the overflow-safe path
    m = trained(d, rank=2, seed=5)
    base = BaseLoRA(d, rank=4, seed=6)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(np.float32) / 16
    big = np.full(d, 1e37, np.float32)

    def learner() -> None:
        for i in range(40):
            m.update_batch(X, X * 1e-3)
            _y, token = m.forward(X[i], explore=True)
            m.reward(token, 0.7)
            base.merge_from(m)
            m.save(tmp_path / f"m{i % 2}.ckpt")

    def reader() -> None:
        for i in range(40):
            assert np.all(np.isfinite(m.forward_batch(X)))
            assert np.all(np.isfinite(base.forward_batch(X)))
            try:
                assert np.all(np.isfinite(m.forward(big)))
            except sona.NumericalError:
                pass
            m.counters()
            m.delta_norm()
            base.lora_B  # noqa: B018 - a getter under contention
            m.gradients(X[i], X[i])

    run_threads([learner, reader])
    assert base.counters()["merges"] == 40


def test_two_threads_on_one_two_tier_adapter() -> None:
    d, n = 256, 300
    tt = TwoTierLoRA(d, merge_every=5, seed=2)
    X = np.random.default_rng(1).standard_normal((n, d)).astype(np.float32) / 16

    def learner() -> None:
        for i in range(100):
            _y, token = tt.forward(X[i], explore=True)
            tt.reward(token, 0.8)
            if i % 25 == 0:
                tt.merge()

    def reader() -> None:
        for _ in range(100):
            assert np.all(np.isfinite(tt.forward_batch(X)))
            tt.base.counters()
            tt.micro.delta_norm()
            tt.last_merge()

    run_threads([learner, reader])
    assert tt.base.counters()["merges"] >= 20


def test_numpy_inputs_written_during_a_call_are_validated_as_read() -> None:
    # forward_batch / update_batch release the GIL; numpy also releases it while copying large
    # arrays, so another thread can write the input during a call. The call copies its input and
    # validates the copy: it returns finite rows or raises NonFiniteError, never computes on NaN.
    d, n = 256, 2000
    m = trained(d, rank=2, seed=7)
    finite = np.full((n, d), 0.01, np.float32)
    poison = finite.copy()
    poison[n // 2 :, :] = np.nan
    X = finite.copy()
    stop = threading.Event()
    outcomes = {"ok": 0, "non_finite": 0}

    def caller() -> None:
        try:
            for i in range(300):
                try:
                    if i % 2:
                        assert np.all(np.isfinite(m.forward_batch(X)))
                    else:
                        m.update_batch(X, X * 1e-3)
                    outcomes["ok"] += 1
                except sona.NonFiniteError:
                    outcomes["non_finite"] += 1
        finally:
            stop.set()

    def scribbler() -> None:
        flip = False
        while not stop.is_set():
            X[:] = poison if flip else finite
            flip = not flip

    before = m.counters()["rejected"]
    run_threads([caller, scribbler])
    assert outcomes["ok"] + outcomes["non_finite"] == 300
    assert m.counters()["rejected"] == before, "a NaN reached the optimizer"
    assert np.all(np.isfinite(m.lora_A)) and np.all(np.isfinite(m.lora_B))


def test_paths_and_module_names_of_the_wrong_kind_raise_documented_errors(tmp_path: Path) -> None:
    """A path that is not str/bytes/os.PathLike is an InvalidInputError and a non-str module a
    ConfigError, in every saver and loader (not a bare TypeError from the conversion); bytes
    paths work. Nothing is written and the adapter is unchanged."""
    lora = MicroLoRA(8, seed=1)
    lora.update(np.ones(8, np.float32), 0.1 * np.ones(8, np.float32))
    a0 = lora.lora_A.copy()
    peft = tmp_path / "p.safetensors"
    lora.save_peft(peft, module="model.layers.0.q_proj")
    calls: list[Callable[[Any], object]] = [
        lora.save,
        lambda p: lora.save_peft(p, module="model.layers.0.q_proj"),
        lora.save_quantized,
        lora.load_peft,
        MicroLoRA.load,
        BaseLoRA.from_peft,
        read_peft,
        sona.lora.load_quantized,
    ]
    for call in calls:
        for bad in (None, 3, ["x"]):
            with pytest.raises(sona.InvalidInputError, match="expected a path"):
                call(bad)
    for module_call in (
        lambda: lora.load_peft(peft, 5),  # type: ignore[arg-type]
        lambda: BaseLoRA.from_peft(peft, module=5),  # type: ignore[arg-type]
        lambda: read_peft(peft, module=5),  # type: ignore[arg-type]
    ):
        with pytest.raises(sona.ConfigError, match="expected a str"):
            module_call()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.safetensors"]
    assert np.array_equal(lora.lora_A, a0)
    lora.save(str(tmp_path / "l.st").encode())  # type: ignore[arg-type]
    assert np.array_equal(MicroLoRA.load(tmp_path / "l.st").lora_A, a0)


def test_gradients_that_overflow_raise_numerical_error() -> None:
    """Finite inputs near 1e38 overflow dL/dA and dL/dB: NumericalError (as `update` raises),
    not Inf handed back; the adapter is unchanged."""
    lora = MicroLoRA(8, seed=1)
    lora.update(np.full(8, 0.5, np.float32), np.full(8, 0.1, np.float32))
    a0 = lora.lora_A.copy()
    big = np.full(8, 1e38, np.float32)
    with pytest.raises(sona.NumericalError, match="overflows"):
        lora.gradients(big, big)
    assert np.array_equal(lora.lora_A, a0)
    assert all(np.isfinite(g).all() for g in lora.gradients(np.ones(8), np.ones(8)))
