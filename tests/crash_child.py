"""Child process of ``test_durability.py``'s crash test: an engine under load until killed.

``python crash_child.py WORKDIR SEED``: loads the checkpoint in WORKDIR (falling back to the
previous one) or starts a new engine (replaying the log), prints one ``READY {json}`` line with its
counters, waits for a line on stdin (so the parent compares those counters with a log this child has
not written to yet; it exits if stdin closes), then runs 4 threads of process + feedback, appending
each acknowledged trajectory id to ``WORKDIR/acked`` *after* ``feedback`` returned. Loop B runs
every few feedbacks and checkpoints after every cycle; the log is in ``"sync"`` mode. It runs until
SIGKILLed.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from pathlib import Path

import numpy as np

from sona import _sona

DIM = 16


def config(work: Path) -> dict[str, object]:
    """The engine config the crash test uses."""
    return {
        "dim": DIM,
        "bank_index": "flat",
        "learning_mode": "instant_and_background",
        "loop_b_every": 40,
        "loop_b_interval_s": 0.05,
        "loop_b_steps": 5,
        "epsilon": 0.2,
        "log_path": str(work / "log.db"),
        "durability": "sync",
        "checkpoint_dir": str(work / "ck"),
        "checkpoint_every_cycles": 1,
        "seed": 3,
    }


def main() -> None:
    work = Path(sys.argv[1])
    seed = int(sys.argv[2])
    ck = work / "ck"
    if ck.exists() or Path(f"{ck}.prev").exists():
        engine = _sona.Engine.load(str(ck), fallback=True)
    else:
        engine = _sona.Engine(json.dumps(config(work)))
    print("READY " + json.dumps(engine.stats()), flush=True)
    if not sys.stdin.readline():
        return  # the parent is gone
    fd = os.open(work / "acked", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    centers = np.random.default_rng(0).standard_normal((4, DIM)).astype(np.float32)

    def worker(k: int) -> None:
        rng = np.random.default_rng(seed * 100 + k)
        while True:
            c = int(rng.integers(4))
            x = (centers[c] + 0.1 * rng.standard_normal(DIM)).astype(np.float32)
            d = engine.process(x)
            reward = 1.0 if d.tier == c else 0.0
            engine.feedback(d.trajectory_id, reward)
            os.write(fd, f"{d.trajectory_id}\n".encode())

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
