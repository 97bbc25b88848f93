"""Property tests: random operation sequences keep the bank's invariants."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sona.errors import SonaError
from sona.reasoning import ReasoningBank

D = 8

op = st.one_of(
    st.tuples(
        st.just("add"), st.integers(0, 5), st.none() | st.floats(-0.5, 1.5), st.integers(-1, 4)
    ),
    st.tuples(st.just("reward"), st.integers(0, 30), st.floats(-0.5, 1.5), st.just(0)),
    st.tuples(st.just("extract"), st.just(0), st.none(), st.just(0)),
    st.tuples(st.just("feedback"), st.integers(0, 10), st.floats(-0.5, 1.5), st.integers(-1, 4)),
    st.tuples(st.just("consolidate"), st.just(0), st.floats(0.5, 1.0), st.just(0)),
)


def state(bank: ReasoningBank) -> tuple[object, ...]:
    s = bank.stats()
    return (
        s.next_trajectory_id,
        s.buffered,
        s.pending,
        s.patterns,
        tuple((p.id, p.support, p.arms) for p in bank.patterns()),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(op, max_size=40), st.integers(0, 2**32))
def test_random_operations_keep_invariants(
    ops: list[tuple[str, int, float | None, int]], seed: int
) -> None:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((6, D)).astype(np.float32)
    bank = ReasoningBank(D, seed=seed)
    ids: list[int] = []
    extracted = 0
    for name, a, x, t in ops:
        before = state(bank)
        try:
            if name == "add":
                v = centres[a] + 0.1 * rng.standard_normal(D).astype(np.float32)
                ids.append(bank.add_trajectory(v, x, None if t < 0 else t))
                assert ids == sorted(set(ids)), "ids are unique and increasing"
            elif name == "reward":
                bank.set_reward(ids[a] if a < len(ids) else 10**6, float(x or 0.0))
            elif name == "extract":
                extracted += bank.extract_patterns().trajectories
            elif name == "feedback":
                pats = bank.patterns()
                pid = pats[a].id if a < len(pats) else 10**6
                bank.record_feedback(pid, t, float(x or 0.0))
            else:
                bank.consolidate(float(x or 0.95))
        except SonaError:
            assert state(bank) == before, f"{name} failed but changed the bank"
        # Support is conserved through extraction, merges and consolidation.
        assert sum(p.support for p in bank.patterns()) == extracted
        s = bank.stats()
        assert s.completed == extracted + s.buffered
        # The index holds exactly the live patterns (updated on insert, merge and delete).
        if len(bank):
            found, _ = bank.search_ids(centres[0], len(bank))
            assert sorted(found.tolist()) == [p.id for p in bank.patterns()]
