"""Continual learning on real data (design §11.2): Permuted-Digits and Split-Digits.

Data: scikit-learn's bundled ``load_digits`` (1,797 8×8 images, no download), pixels scaled to [0,
1],
a stratified 70/30 train/test split per seed.

- **Permuted-Digits**: 5 tasks, each a fixed random permutation of the 64 pixels (task 1 keeps the
  original order); one shared 10-way head.
- **Split-Digits** (domain-incremental): 5 tasks of two digits each, {0,1}, {2,3}, …, {8,9}; one
  shared
  binary head that answers "first or second digit of the pair".

Model: a 64→H→C ReLU MLP in numpy (:mod:`sona.evals._mlp`) trained task by task with minibatch SGD.
Its per-sample gradients feed :class:`sona.ewc.EwcPlusPlus`'s online Fisher during training and
every
training gradient goes through :meth:`~sona.ewc.EwcPlusPlus.apply`; at the end of a task the current
parameters are folded in with :meth:`~sona.ewc.EwcPlusPlus.complete_task`. ``--fisher final``
and ``final-empirical`` instead pass an explicit Fisher computed at θ* over the task's whole
training set (exact expectation over the model's predictive distribution, or at the observed
labels; :meth:`sona.evals._mlp.MLP.fisher_diag`); ``--fisher-floor`` sets the smallest Fisher
value a task contributes. No variant beat the defaults (online Fisher, no floor); see
docs/benchmarks.md.

Methods: ``none`` (fine-tuning, no protection), ``ewc`` (EWC++), ``replay`` (a uniform reservoir of
past
training examples mixed into every minibatch), ``ewc+replay``, and ``joint`` (trained on all tasks
seen
so far: the upper bound). Metrics follow design §8 on the accuracy matrix ``R[i][j]`` (after task i,
on
task j): ``ACC``, ``BWT``, forgetting, plus ``LA`` (learning accuracy: mean ``R[j][j]``, how well
each
new task is learned), all as mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sona.evals._mlp import MLP
from sona.ewc import AdaptiveLambda, EwcPlusPlus, TaskBoundaryDetector

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

BENCHMARKS = ("permuted", "split")
METHODS = ("none", "ewc", "replay", "ewc+replay", "joint")
#: Also runnable (not in the default set, to keep the full run short).
EXTRA_METHODS = ("ewc-adaptive", "ewc-detect")
ALL_METHODS = METHODS + EXTRA_METHODS
#: Where a finished task's Fisher comes from: ``online`` (the EMA of per-sample gradients gathered
#: during training), ``final`` (the true Fisher at θ* over the task's training set, the exact
#: expectation over the model's predictive distribution), ``final-empirical`` (observed labels).
FISHER_MODES = ("online", "final", "final-empirical")


@dataclass
class ContinualConfig:
    """Everything a run depends on (stored in the JSON output)."""

    benchmarks: tuple[str, ...] = BENCHMARKS
    methods: tuple[str, ...] = METHODS
    seeds: int = 5
    n_tasks: int = 5
    epochs: int = 20
    hidden: int = 400
    batch: int = 32
    #: "adam" or "sgd".
    optimizer: str = "adam"
    lr: float = 2e-3
    #: EWC++ strength per benchmark (tuned by measurement, see docs/benchmarks.md).
    lambdas: dict[str, float] = field(default_factory=lambda: {"permuted": 100.0, "split": 1e4})
    #: Online-Fisher EMA decay per sample (≈ 200 samples, 2/3 of an epoch of Fisher samples).
    gamma: float = 0.995
    #: Per-sample gradients per minibatch fed to the online Fisher.
    fisher_batch: int = 8
    #: One of FISHER_MODES (``ewc-detect`` always uses ``online``: it has no task data at θ*).
    fisher: str = "online"
    #: Smallest Fisher value a task contributes (``EwcPlusPlus(floor=…)``): a weak L2 pull toward θ*
    #: on parameters the diagonal Fisher calls unimportant.
    fisher_floor: float = 0.0
    replay_size: int = 200
    #: Evaluations of task-1 accuracy per epoch for the forgetting curve.
    curve_points_per_epoch: int = 1


@dataclass
class Task:
    x_train: F32
    y_train: I64
    x_test: F32
    y_test: I64


def _split(
    n_per_class: dict[int, npt.NDArray[np.int64]], rng: np.random.Generator
) -> tuple[I64, I64]:
    train, test = [], []
    for idx in n_per_class.values():
        idx = rng.permutation(idx)
        cut = round(0.7 * len(idx))
        train.append(idx[:cut])
        test.append(idx[cut:])
    return np.concatenate(train), np.concatenate(test)


def make_tasks(benchmark: str, seed: int, n_tasks: int = 5) -> tuple[list[Task], int]:
    """The task sequence and the number of classes of the shared head."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    classes = {c: np.flatnonzero(y == c) for c in range(10)}
    tr, te = _split(classes, rng)
    tasks: list[Task] = []
    if benchmark == "permuted":
        for t in range(n_tasks):
            perm = np.arange(64) if t == 0 else rng.permutation(64)
            tasks.append(Task(x[tr][:, perm], y[tr], x[te][:, perm], y[te]))
        return tasks, 10
    if benchmark == "split":
        if n_tasks > 5:
            raise ValueError("split digits has at most 5 tasks")
        for t in range(n_tasks):
            pair = (2 * t, 2 * t + 1)
            mtr, mte = np.isin(y[tr], pair), np.isin(y[te], pair)
            tasks.append(Task(x[tr][mtr], y[tr][mtr] % 2, x[te][mte], y[te][mte] % 2))
        return tasks, 2
    raise ValueError(f"unknown benchmark {benchmark!r} (choose from {BENCHMARKS})")


class Reservoir:
    """Uniform sample of everything offered so far (Algorithm R)."""

    def __init__(self, capacity: int, dim: int, rng: np.random.Generator) -> None:
        self.x = np.zeros((capacity, dim), dtype=np.float32)
        self.y = np.zeros(capacity, dtype=np.int64)
        self.size = 0
        self.seen = 0
        self.rng = rng

    def offer(self, x: F32, y: I64) -> None:
        for xi, yi in zip(x, y, strict=True):
            if self.size < len(self.y):
                slot = self.size
                self.size += 1
            else:
                slot = int(self.rng.integers(0, self.seen + 1))
            self.seen += 1
            if slot < len(self.y):
                self.x[slot], self.y[slot] = xi, yi

    def sample(self, n: int) -> tuple[F32, I64]:
        idx = self.rng.integers(0, self.size, size=min(n, self.size))
        return self.x[idx], self.y[idx]


class Optimizer:
    """Plain SGD or Adam (bias-corrected) on a flat parameter vector, updated in place."""

    def __init__(self, kind: str, lr: float, p: int) -> None:
        if kind not in ("sgd", "adam"):
            raise ValueError(f"unknown optimizer {kind!r}")
        self.kind, self.lr, self.t = kind, np.float32(lr), 0
        self.m = np.zeros(p, dtype=np.float32)
        self.v = np.zeros(p, dtype=np.float32)

    def step(self, theta: F32, g: F32) -> None:
        if self.kind == "sgd":
            theta -= self.lr * g
            return
        self.t += 1
        self.m *= 0.9
        self.m += 0.1 * g
        self.v *= 0.999
        self.v += 0.001 * g * g
        c1, c2 = 1 - 0.9**self.t, 1 - 0.999**self.t
        theta -= self.lr * (self.m / c1) / (np.sqrt(self.v / c2) + 1e-8)


def run_method(
    method: str,
    tasks: Sequence[Task],
    n_classes: int,
    cfg: ContinualConfig,
    seed: int,
    lam: float,
) -> tuple[npt.NDArray[np.float64], list[float]]:
    """Trains ``method`` over the task sequence; returns ``R`` and the task-1 accuracy curve."""
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r} (choose from {ALL_METHODS})")
    rng = np.random.default_rng(seed * 7919 + 17)
    dim = tasks[0].x_train.shape[1]
    model = MLP(dim, cfg.hidden, n_classes, rng)
    use_ewc = "ewc" in method
    if cfg.fisher not in FISHER_MODES:
        raise ValueError(f"unknown fisher mode {cfg.fisher!r} (choose from {FISHER_MODES})")
    # The final-Fisher modes need task labels (θ* and the task's data at the boundary).
    online_fisher = cfg.fisher == "online" or method == "ewc-detect"
    use_replay = "replay" in method
    adaptive = (
        AdaptiveLambda(lam, lambda_min=lam / 10, lambda_max=lam * 10, delta=0.02)
        if method == "ewc-adaptive"
        else None
    )
    ewc = (
        EwcPlusPlus(
            model.param_count,
            lambda_=lam,
            lambda_min=lam / 10,
            lambda_max=lam * 10,
            gamma=cfg.gamma,
            floor=cfg.fisher_floor,
        )
        if use_ewc
        else None
    )
    reservoir = Reservoir(cfg.replay_size, dim, rng) if use_replay else None
    # Probe sets for the adaptive λ: 100 training examples of every task (old ones measure
    # forgetting, the current one measures new-task progress).
    probes = [(t.x_train[:100], t.y_train[:100]) for t in tasks]
    # "ewc-detect": no task labels. A detector on the training inputs declares the boundaries, and
    # the task is consolidated at the parameters from before the change (its stable snapshot).
    detector = (
        TaskBoundaryDetector(dim, components=16, alpha=1e-6, param_count=model.param_count)
        if method == "ewc-detect"
        else None
    )
    opt = Optimizer(cfg.optimizer, cfg.lr, model.param_count)
    n = len(tasks)
    r = np.zeros((n, n))
    curve: list[float] = []
    for i, task in enumerate(tasks):
        if method == "joint":
            xs = np.concatenate([t.x_train for t in tasks[: i + 1]])
            ys = np.concatenate([t.y_train for t in tasks[: i + 1]])
        else:
            xs, ys = task.x_train, task.y_train
        steps_per_epoch = int(np.ceil(len(ys) / cfg.batch))
        eval_every = max(1, steps_per_epoch // cfg.curve_points_per_epoch)
        if adaptive is not None:
            adaptive.reset_probe()
        for _epoch in range(cfg.epochs):
            if adaptive is not None and ewc is not None and i > 0:
                # Once per epoch: raise λ if the old tasks' probe accuracy fell δ below its
                # running max, lower it if the current task stalls below target.
                old = float(np.mean([model.accuracy(x, y) for x, y in probes[:i]]))
                adaptive.update(old, model.accuracy(*probes[i]))
                ewc.lambda_ = adaptive.value
            order = rng.permutation(len(ys))
            for step in range(steps_per_epoch):
                idx = order[step * cfg.batch : (step + 1) * cfg.batch]
                xb, yb = xs[idx], ys[idx]
                if detector is not None and ewc is not None:
                    for x in xb:
                        if detector.observe(x, model.theta) and ewc.online_samples > 0:
                            snap = detector.stable_snapshot()
                            ewc.complete_task(model.theta if snap is None else snap[1])
                if ewc is not None and online_fisher:
                    # Per-sample gradients of the current task only (replayed examples are old
                    # tasks), on a subsample of the minibatch: the Fisher is an average, and
                    # per-sample gradients cost several times a batch gradient.
                    ewc.update_fisher_batch(model.per_sample_grads(xb[: cfg.fisher_batch], rng))
                if reservoir is not None and reservoir.size > 0:
                    xr, yr = reservoir.sample(cfg.batch)
                    xb, yb = np.concatenate([xb, xr]), np.concatenate([yb, yr])
                _, g = model.grad(xb, yb)
                if ewc is not None:
                    g = ewc.apply(model.theta, g)
                opt.step(model.theta, g)
                if (step + 1) % eval_every == 0:
                    curve.append(model.accuracy(tasks[0].x_test, tasks[0].y_test))
        if ewc is not None and detector is None:
            if online_fisher:
                ewc.complete_task(model.theta)
            else:
                # The task's Fisher at θ*, averaged over all its training examples.
                labels = task.y_train if cfg.fisher == "final-empirical" else None
                ewc.complete_task(model.theta, fisher=model.fisher_diag(task.x_train, labels))
        if reservoir is not None:
            reservoir.offer(task.x_train, task.y_train)
        for j, t in enumerate(tasks):
            r[i, j] = model.accuracy(t.x_test, t.y_test)
    return r, curve


def metrics(r: npt.NDArray[np.float64]) -> dict[str, float]:
    """design §8 on an accuracy matrix (fractions in, percentage points out)."""
    t = r.shape[0] - 1
    acc = float(np.mean(r[t]))
    bwt = float(np.mean([r[t, j] - r[j, j] for j in range(t)])) if t > 0 else 0.0
    forg = float(np.mean([r[:t, j].max() - r[t, j] for j in range(t)])) if t > 0 else 0.0
    la = float(np.mean(np.diag(r)))
    return {"ACC": 100 * acc, "BWT": 100 * bwt, "forgetting": 100 * forg, "LA": 100 * la}


def run(
    cfg: ContinualConfig, progress: bool = True, on_run: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Runs every benchmark × method × seed; returns the JSON-ready results."""
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm

    jobs = [(b, m, s) for b in cfg.benchmarks for s in range(cfg.seeds) for m in cfg.methods]
    out: dict[str, Any] = {"config": asdict(cfg), "results": {}}
    raw: dict[tuple[str, str], list[tuple[npt.NDArray[np.float64], list[float]]]] = {}
    cache: dict[tuple[str, int], tuple[list[Task], int]] = {}
    t0 = time.perf_counter()
    # The model's matrices are tiny: BLAS threads only contend (10x slower on a loaded 2-core box).
    limiter = threadpool_limits(1)
    for b, m, s in tqdm(jobs, desc="continual", disable=not progress, unit="run"):
        if (b, s) not in cache:
            cache[(b, s)] = make_tasks(b, s, cfg.n_tasks)
        tasks, n_classes = cache[(b, s)]
        raw.setdefault((b, m), []).append(
            run_method(m, tasks, n_classes, cfg, s, cfg.lambdas.get(b, 1e3))
        )
        if on_run is not None:
            on_run(f"{b}/{m}/seed{s}")
    for (b, m), runs in raw.items():
        rs = np.stack([r for r, _ in runs])
        per_seed = [metrics(r) for r in rs]
        summary = {
            k: {
                "mean": float(np.mean([p[k] for p in per_seed])),
                "std": float(np.std([p[k] for p in per_seed])),
            }
            for k in per_seed[0]
        }
        out["results"].setdefault(b, {})[m] = {
            "R_mean": (100 * rs.mean(axis=0)).round(2).tolist(),
            "R_std": (100 * rs.std(axis=0)).round(2).tolist(),
            "R_per_seed": (100 * rs).round(2).tolist(),
            "metrics": summary,
            "metrics_per_seed": per_seed,
            "curve_task1": (100 * np.mean([c for _, c in runs], axis=0)).round(2).tolist(),
        }
    limiter.restore_original_limits()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def format_tables(results: dict[str, Any]) -> str:
    """R matrices and the metric table, as plain text."""
    lines: list[str] = []
    for b, by_method in results["results"].items():
        lines.append(f"\n== {b}-digits ({results['config']['seeds']} seeds, accuracy %) ==")
        for m, res in by_method.items():
            lines.append(f"\n{m}: R[i][j] (after task i, on task j), mean ± std")
            for i, (row, srow) in enumerate(zip(res["R_mean"], res["R_std"], strict=True)):
                cells = "  ".join(f"{v:5.1f}±{s:4.1f}" for v, s in zip(row, srow, strict=True))
                lines.append(f"  {i + 1}: {cells}")
        lines.append("")
        lines.append(f"  {'method':<11} {'ACC':>13} {'BWT':>13} {'forgetting':>13} {'LA':>13}")
        for m, res in by_method.items():
            mm = res["metrics"]
            cells = " ".join(
                f"{mm[k]['mean']:7.2f}±{mm[k]['std']:5.2f}"
                for k in ("ACC", "BWT", "forgetting", "LA")
            )
            lines.append(f"  {m:<11} {cells}")
    lines.append(f"\n({results['seconds']} s)")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: str) -> None:
    """Task-1 test accuracy over training, per method (mean over seeds), one panel per benchmark."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = list(results["results"])
    fig, axes = plt.subplots(1, len(benches), figsize=(6 * len(benches), 4), squeeze=False)
    cfg = results["config"]
    for ax, b in zip(axes[0], benches, strict=True):
        for m, res in results["results"][b].items():
            curve = res["curve_task1"]
            ax.plot(np.arange(1, len(curve) + 1), curve, label=m)
        per_task = cfg["epochs"] * cfg["curve_points_per_epoch"]
        for k in range(1, cfg["n_tasks"]):
            ax.axvline(k * per_task + 0.5, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{b}-digits: accuracy on task 1")
        ax.set_xlabel("evaluation (tasks separated by dotted lines)")
        ax.set_ylabel("task-1 test accuracy (%)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--benchmark", choices=[*BENCHMARKS, "both"], default="both", help="which task sequence"
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds (mean ± std over them)")
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=ALL_METHODS,
        default=list(METHODS),
        metavar="METHOD",
        help=f"any of {', '.join(ALL_METHODS)} (default: all but {', '.join(EXTRA_METHODS)})",
    )
    parser.add_argument(
        "--epochs", type=int, default=ContinualConfig.epochs, help="training epochs per task"
    )
    parser.add_argument(
        "--tasks", type=int, default=5, help="tasks in the sequence (≤ 5 for split)"
    )
    parser.add_argument(
        "--lambda",
        dest="lam",
        type=float,
        default=None,
        help="EWC++ λ for every benchmark (default: the tuned per-benchmark values)",
    )
    parser.add_argument(
        "--fisher",
        choices=FISHER_MODES,
        default=ContinualConfig.fisher,
        help="where a finished task's Fisher comes from: the online EMA during training (default), "
        "or the true / empirical Fisher at θ* over the task's training set",
    )
    parser.add_argument(
        "--fisher-floor",
        type=float,
        default=ContinualConfig.fisher_floor,
        help="smallest Fisher value a task contributes (EwcPlusPlus floor; default 0)",
    )
    parser.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="write the forgetting curves as PNG")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def config_from_args(args: argparse.Namespace) -> ContinualConfig:
    cfg = ContinualConfig(
        benchmarks=BENCHMARKS if args.benchmark == "both" else (args.benchmark,),
        methods=tuple(args.methods),
        seeds=args.seeds,
        epochs=args.epochs,
        n_tasks=args.tasks,
        fisher=args.fisher,
        fisher_floor=args.fisher_floor,
    )
    if args.lam is not None:
        cfg.lambdas = {b: float(args.lam) for b in BENCHMARKS}
    return cfg


def main(args: argparse.Namespace) -> int:
    results = run(config_from_args(args), progress=not args.no_progress)
    print(format_tables(results))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=1)
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _register() -> None:
    from sona import cli

    cli.EVALS["continual"] = (
        "continual learning on Permuted/Split-Digits: none / EWC++ / replay / joint (design §11.2)",
        add_arguments,
        main,
    )


_register()
