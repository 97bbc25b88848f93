"""Durability of the engine (issue 12): checkpoint directories, the interaction log and its modes,
replay, a SIGKILL crash test, and a multi-threaded load test."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from sona import _sona
from sona.errors import CheckpointError, ConfigError, UnknownIdError
from sona.log import export_log, read_log

CHILD = Path(__file__).with_name("crash_child.py")


def make(dim: int = 16, **kw: object) -> _sona.Engine:
    cfg = {"dim": dim, "learning_mode": "instant_only", "bank_index": "flat", **kw}
    return _sona.Engine(json.dumps(cfg))


def drive(e: _sona.Engine, n: int, seed: int = 0) -> list[int]:
    rng = np.random.default_rng(seed)
    ids = []
    for _ in range(n):
        d = e.process(rng.standard_normal(e.dim).astype(np.float32))
        e.feedback(d.trajectory_id, float(rng.random()))
        ids.append(d.trajectory_id)
    return ids


def logged_feedback_ids(path: Path) -> list[int]:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return [r[0] for r in conn.execute("SELECT id FROM records WHERE kind = 2")]
    finally:
        conn.close()


def logged_max_seq(path: Path) -> int:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT COALESCE(MAX(seq), 0) FROM records").fetchone()[0])
    finally:
        conn.close()


def test_durability_config_is_validated(tmp_path: Path) -> None:
    for bad in [
        {"durability": "sometimes"},
        {"group_commit_ms": 0},
        {"log_path": ""},
        {"checkpoint_every_cycles": 0},
        {"log_retention_s": -1},
    ]:
        with pytest.raises(ConfigError):
            make(**bad)
    # A log of another dimension is refused.
    make(log_path=str(tmp_path / "l.db")).close()
    with pytest.raises(ConfigError):
        make(dim=17, log_path=str(tmp_path / "l.db"))


def test_checkpoint_directory_keeps_previous_and_falls_back(tmp_path: Path) -> None:
    e = make()
    drive(e, 50)
    ck = tmp_path / "ck"
    e.save(str(ck))
    first = e.stats()["feedbacks"]
    drive(e, 30, seed=1)
    e.save(str(ck))
    assert sorted(os.listdir(tmp_path)) == ["ck", "ck.prev"]
    assert sorted(os.listdir(ck)) == ["MANIFEST", "bank.ckpt", "engine.ckpt", "ewc.ckpt"]
    assert _sona.Engine.load(str(ck)).stats()["feedbacks"] == 80
    assert _sona.Engine.load(str(ck) + ".prev").stats()["feedbacks"] == first
    # Corrupt one byte of the current checkpoint: refused, or the previous one with fallback.
    p = ck / "bank.ckpt"
    raw = bytearray(p.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    p.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        _sona.Engine.load(str(ck))
    assert _sona.Engine.load(str(ck), fallback=True).stats()["feedbacks"] == first
    # A tampered manifest, a missing file, a missing directory.
    (ck / "MANIFEST").write_text("{}\n00000000\n")
    with pytest.raises(CheckpointError):
        _sona.Engine.load(str(ck))
    with pytest.raises(CheckpointError):
        _sona.Engine.load(str(tmp_path / "nothing"))
    with pytest.raises(CheckpointError):
        _sona.Engine.load(str(tmp_path / "nothing"), fallback=True)
    # save refuses to replace a directory that is not a checkpoint.
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError):
        e.save(str(other))
    assert (other / "notes.txt").read_text() == "keep me"


def test_pending_trajectories_survive_save_and_load(tmp_path: Path) -> None:
    """Decisions made before ``save`` and rewarded after ``load`` (no log to replay them from)
    train the loaded engine exactly as they would have trained the saved one."""
    e = make()
    drive(e, 30)
    rng = np.random.default_rng(7)
    waiting = [e.process(rng.standard_normal(16).astype(np.float32)) for _ in range(12)]
    e.save(str(tmp_path / "ck"))
    r = _sona.Engine.load(str(tmp_path / "ck"))
    assert r.stats()["pending"] == e.stats()["pending"] == 12
    probe = np.linspace(-1, 1, 16).astype(np.float32)
    for d in waiting:
        reward = float(d.tier == 1)
        e.feedback(d.trajectory_id, reward)
        r.feedback(d.trajectory_id, reward)
    # Same steps on both: same counters, metrics and next decision.
    for k in ("feedbacks", "pending", "generation", "replay", "rejected_steps"):
        assert r.stats()[k] == e.stats()[k], k
    assert r.improvement_metrics()["overall"] == e.improvement_metrics()["overall"]
    a, b = e.process(probe), r.process(probe)
    assert np.array_equal(a.predicted, b.predicted) and a.tier == b.tier
    with pytest.raises(UnknownIdError):
        r.feedback(waiting[0].trajectory_id, 1.0)  # rewarded once
    r.close()
    e.close()


@pytest.mark.parametrize("mode", ["sync", "group"])
def test_log_replays_after_the_checkpoint(tmp_path: Path, mode: str) -> None:
    log = tmp_path / "log.db"
    e = make(log_path=str(log), durability=mode)
    drive(e, 40)
    e.save(str(tmp_path / "ck"))
    after = drive(e, 25, seed=2)
    # Trajectories awaiting feedback at the crash are pending again after replay.
    waiting = e.process(np.ones(16, dtype=np.float32)).trajectory_id
    e.flush_log()
    assert e.stats()["durability"]["log_committed"] == e.stats()["durability"]["log_seq"]
    # Simulate a crash: no close, no save. A second engine loads the checkpoint and replays.
    r = _sona.Engine.load(str(tmp_path / "ck"))
    s = r.stats()
    assert s["feedbacks"] == 65 and s["processed"] == 66
    assert s["durability"]["replay_skipped"] == 0
    assert s["durability"]["replayed"] == 2 * 25 + 1
    assert s["next_trajectory_id"] > waiting
    r.feedback(waiting, 1.0)  # pending again
    with pytest.raises(UnknownIdError):
        r.feedback(after[-1], 1.0)  # already rewarded before the crash
    r.close()
    e.close()
    # Without a checkpoint the whole log is replayed.
    fresh = make(log_path=str(log), durability=mode)
    assert fresh.stats()["feedbacks"] == 66
    fresh.close()
    rows = list(read_log(log))
    assert [r["kind"] for r in rows].count("feedback") == 66
    assert all(len(r["query"]) == 16 for r in rows if r["kind"] == "trajectory")


def test_export_log_jsonl_and_cli(tmp_path: Path) -> None:
    log = tmp_path / "log.db"
    e = make(log_path=str(log), durability="group")
    ids = drive(e, 10)
    e.close()
    out = tmp_path / "out.jsonl"
    assert export_log(log, out) == 20
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["seq"] for r in rows] == list(range(1, 21))
    assert [r["id"] for r in rows if r["kind"] == "feedback"] == ids
    res = subprocess.run(
        [sys.executable, "-m", "sona.cli", "export-log", str(log), str(tmp_path / "b.jsonl")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 0, res.stderr
    assert "wrote 20 records" in res.stdout
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"SQLite format 3\x00" + b"\x00" * 100)
    with pytest.raises(CheckpointError):
        export_log(junk, tmp_path / "x.jsonl")
    with pytest.raises(CheckpointError):
        export_log(tmp_path / "missing.db", tmp_path / "x.jsonl")


def _wait_ready(proc: subprocess.Popen[str], timeout: float) -> dict[str, object]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("READY "):
            return json.loads(line[6:])  # type: ignore[no-any-return]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    err = proc.stderr.read() if proc.stderr else ""
    raise AssertionError(f"child did not become ready: {err[-2000:]}")


def _acked(work: Path) -> list[int]:
    p = work / "acked"
    if not p.exists():
        return []
    text = p.read_text()
    return [int(x) for x in text.split("\n")[:-1] if x]  # the last line may be torn


def _in_commit(marker: Path) -> bool:
    """Whether the child's log writer was inside a commit (``SONA_LOG_COMMIT_MARKER``)."""
    try:
        return marker.read_bytes().startswith(b"begin")
    except FileNotFoundError:
        return False


def test_sigkill_crash_loses_no_acknowledged_feedback(tmp_path: Path) -> None:
    """≥ 20 SIGKILLs at random moments, a third of them while a checkpoint is being written and a
    third the moment the log writer enters a commit (the writer reports it through the
    ``SONA_LOG_COMMIT_MARKER`` test hook, so each kill that landed inside a commit is counted): the
    checkpoint loads, every acknowledged feedback is in the log and re-applied, learning goes on."""
    rnd = random.Random(12)
    work = tmp_path
    marker = work / "commit-marker"
    kills = during_checkpoint = during_commit = 0
    last_runs = 0
    start = time.monotonic()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(sys.path),
        "SONA_LOG_COMMIT_MARKER": str(marker),
    }
    for i in range(22):
        proc = subprocess.Popen(
            [sys.executable, str(CHILD), str(work), str(i)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            stats = _wait_ready(proc, 60)
            if i == 1:
                # A slow reader (a loaded machine): the log must still be the one READY saw.
                time.sleep(0.2)
            db = work / "log.db"
            log_fb = logged_feedback_ids(db) if db.exists() else []
            # Everything logged was applied: the checkpoint's feedbacks plus the replayed ones.
            # The child writes nothing until told to go on, so this is the log it replayed.
            assert stats["feedbacks"] == len(log_fb), (i, stats, len(log_fb))
            assert stats["durability"]["replay_skipped"] == 0  # type: ignore[index]
            # New records are numbered after everything already logged.
            seq = int(stats["durability"]["log_seq"])  # type: ignore[index]
            assert (logged_max_seq(db) if db.exists() else 0) <= seq
            last_runs = max(last_runs, int(stats["loop_b_runs"]))  # type: ignore[call-overload]
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        except BaseException:
            proc.kill()
            proc.wait(timeout=30)
            raise
        if i % 3 == 2:
            # Kill while a checkpoint is being written (its temporary directory exists).
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline:
                if any(n.startswith(".ck.tmp-") for n in os.listdir(work)):
                    during_checkpoint += 1
                    break
        elif i % 3 == 1:
            # Kill as soon as the writer is inside a commit (after some load built up).
            time.sleep(rnd.uniform(0.05, 0.3))
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and not _in_commit(marker):
                pass
        else:
            time.sleep(rnd.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        kills += 1
        # The marker is only rewritten by a live writer: what it says now is where the kill landed.
        during_commit += _in_commit(marker)
        acked = _acked(work)
        logged = set(logged_feedback_ids(work / "log.db"))
        missing = [a for a in acked if a not in logged]
        assert not missing, f"kill {i}: {len(missing)} acknowledged feedbacks lost"
        assert time.monotonic() - start < 150, "crash test over its time budget"
    assert kills >= 20 and during_checkpoint >= 3, (kills, during_checkpoint)
    assert during_commit >= 1, "no kill landed inside a log commit"
    print(
        f"\ncrash test: {kills} SIGKILLs ({during_checkpoint} during a checkpoint, "
        f"{during_commit} inside a log commit), {len(_acked(work))} acknowledged feedbacks, "
        f"{time.monotonic() - start:.1f} s"
    )
    assert len(_acked(work)) > 200
    # The final state loads in this process and keeps learning.
    e = _sona.Engine.load(str(work / "ck"), fallback=True)
    s0 = e.stats()
    assert s0["feedbacks"] == len(logged_feedback_ids(work / "log.db"))
    assert s0["loop_b_runs"] >= 1 and last_runs >= 1
    r = e.background_learn()
    assert r.generation > s0["generation"]
    e.close()


def test_load_eight_threads_conserves_counts(tmp_path: Path) -> None:
    """8 threads of process/feedback + a metrics reader while loop B runs and checkpoints."""
    e = _sona.Engine(
        json.dumps(
            {
                "dim": 64,
                "bank_index": "flat",
                "learning_mode": "instant_and_background",
                "loop_b_every": 200,
                "loop_b_interval_s": 0.1,
                "log_path": str(tmp_path / "log.db"),
                "durability": "group",
                "checkpoint_dir": str(tmp_path / "ck"),
                "seed": 5,
            }
        )
    )
    stop = time.monotonic() + 4.0
    counts = [[0, 0] for _ in range(8)]
    lat: list[list[float]] = [[] for _ in range(8)]
    errors: list[BaseException] = []
    reads = [0]

    def worker(k: int) -> None:
        rng = np.random.default_rng(k)
        try:
            while time.monotonic() < stop:
                x = rng.standard_normal(64).astype(np.float32)
                t0 = time.perf_counter()
                d = e.process(x)
                lat[k].append(time.perf_counter() - t0)
                counts[k][0] += 1
                if rng.random() < 0.8:
                    e.feedback(d.trajectory_id, float(rng.random()))
                    counts[k][1] += 1
        except BaseException as exc:
            errors.append(exc)

    def reader() -> None:
        try:
            while time.monotonic() < stop:
                m = e.improvement_metrics()
                assert isinstance(m, dict)
                reads[0] += 1
                time.sleep(0.005)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    threads.append(threading.Thread(target=reader))
    t0 = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "deadlock: a thread did not finish"
    wall = time.monotonic() - t0
    assert not errors, errors
    s = e.stats()
    n_proc = sum(c[0] for c in counts)
    n_fb = sum(c[1] for c in counts)
    assert s["processed"] == n_proc and s["feedbacks"] == n_fb
    assert s["loop_b_runs"] >= 1 and s["durability"]["checkpoints"] >= 1
    assert s["loop_b_errors"] == 0 and s["durability"]["checkpoint_errors"] == 0
    assert s["loop_a_loss_ema"] is None or np.isfinite(s["loop_a_loss_ema"])
    assert reads[0] > 10
    e.flush_log()
    rows = list(read_log(tmp_path / "log.db"))
    assert sum(r["kind"] == "trajectory" for r in rows) == n_proc
    assert sum(r["kind"] == "feedback" for r in rows) == n_fb
    e.save(str(tmp_path / "ck"))
    e.close()
    # Loading refuses non-finite weights, so a clean load shows no NaN in any weight.
    back = _sona.Engine.load(str(tmp_path / "ck"))
    assert back.stats()["feedbacks"] == n_fb
    back.close()
    all_lat = np.concatenate([np.array(x) for x in lat])
    print(
        f"\nload test: {n_proc} process + {n_fb} feedback in {wall:.2f} s "
        f"({n_proc / wall:.0f} process/s), process p50 {np.percentile(all_lat, 50) * 1e6:.0f} µs "
        f"p99 {np.percentile(all_lat, 99) * 1e6:.0f} µs, loop B runs {s['loop_b_runs']}, "
        f"checkpoints {s['durability']['checkpoints']}"
    )
