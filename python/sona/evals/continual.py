"""Continual learning on real data (design §11.2): Permuted-Digits and Split-Digits, on SONA itself.

Data: scikit-learn's bundled ``load_digits`` (1,797 8×8 images, no download), pixels scaled to
[0, 1], a stratified 60/20/20 train/validation/test split per seed. Hyper-parameters (λ, learning
rate, dream settings) were chosen on the validation split (``--split val``); reported numbers are
on the test split (the default), which tuning never saw.

- **Permuted-Digits**: 5 tasks, each a fixed random permutation of the 64 pixels (task 1 keeps the
  original order); one shared 10-way head.
- **Split-Digits** (domain-incremental): 5 tasks of two digits each, {0,1}, {2,3}, …, {8,9}; one
  shared binary head that answers "first or second digit of the pair".

Model: SONA's FastGRNN router (:class:`sona._sona.RouterClassifier`, Rust
``sona_engine::classifier``): the image is a one-step sequence, the head's outputs are class
logits under softmax cross-entropy, trained with the engine's Adam (loop B's optimizer). Methods:

- ``none``: fine-tuning, no protection;
- ``ewc``: EWC++ (``sona-ewc``): per-sample gradients feed the online Fisher, each task end folds
  the task into the quadratic, whose gradient joins every step;
- ``gpm``: EWC++'s gradient projection (``sona-ewc``'s GPM, design §4) on the router's layers:
  each task end adds the directions holding ``gpm_threshold`` of the energy of the task's inputs to
  each layer (image, its rank-``r_w`` projection, hidden state) to that layer's basis, and later
  weight gradients and Adam's updates are projected off it (gate biases and scalars are frozen
  after the first task).
  No penalty, and no example is kept: only the bases;
- ``replay``: a reservoir of past training examples, sampled through ``sona-dreams``'
  ``PrioritizedReplay`` into every minibatch;
- ``ewc+replay``: both, with its own epochs per later task (``later_epochs``, 20);
- ``dream``: no replay in the minibatches; after every epoch of a later task one dream cycle
  (``sona_dreams::run_cycle``: prioritized replay of the stored examples + distillation of
  pseudo-rehearsal inputs around the stored classes' centroids toward the frozen pre-cycle model,
  kept only if held-out stored examples do not regress);
- ``joint``: trained on all tasks seen so far (the upper bound).

``--router wide`` trains a wider router (H 512, r_w 64) with the λ and GPM thresholds tuned for
that width (``ROUTERS``); the default is the engine's router (H 128, r_w 32).

Metrics on the accuracy matrix ``R[i][j]`` (after task i, on task j) come from ``sona-metrics``
(:func:`sona.metrics.continual_metrics`): ``ACC``, ``BWT``, forgetting, plus ``LA`` (learning
accuracy: mean ``R[j][j]``), all as mean ± std over seeds.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from sona import _sona
from sona._fsio import write_json
from sona._plot import pyplot, save_figure
from sona.errors import ConfigError
from sona.metrics import continual_metrics

F32 = npt.NDArray[np.float32]
I64 = npt.NDArray[np.int64]

BENCHMARKS = ("permuted", "split")
METHODS = ("none", "ewc", "gpm", "replay", "ewc+replay", "dream", "joint")
ALL_METHODS = METHODS
SPLITS = ("val", "test")
#: GPM energy threshold of ``run_method`` and of a benchmark missing from ``gpm_thresholds``.
GPM_THRESHOLD = 0.95


@dataclass
class ContinualConfig:
    """Everything a run depends on (stored in the JSON output)."""

    benchmarks: tuple[str, ...] = BENCHMARKS
    methods: tuple[str, ...] = METHODS
    seeds: int = 5
    #: Seeds run are ``first_seed, …, first_seed + seeds − 1`` (tuning used 0–3; 5+ are fresh).
    first_seed: int = 0
    n_tasks: int = 5
    epochs: int = 10
    hidden: int = 128
    rank_w: int = 32
    batch: int = 32
    lr: float = 2e-3
    #: EWC++ strength per benchmark (chosen on the validation split, see docs/benchmarks.md).
    lambdas: dict[str, float] = field(default_factory=lambda: {"permuted": 30.0, "split": 1e3})
    #: EWC++ strength for ``ewc+replay`` per benchmark, chosen on validation separately (replay
    #: already protects, so the best λ there is smaller); a missing entry uses ``lambdas``.
    lambdas_with_replay: dict[str, float] = field(
        default_factory=lambda: {"permuted": 1.0, "split": 10.0}
    )
    #: GPM energy threshold per benchmark for ``gpm``, chosen on validation at the default width
    #: (the least forgetting with LA within 2 points of ``none``; see docs/benchmarks.md).
    gpm_thresholds: dict[str, float] = field(
        default_factory=lambda: {"permuted": 0.95, "split": 0.85}
    )
    #: Online-Fisher EMA decay per sample.
    gamma: float = 0.995
    #: Per-sample gradients per minibatch fed to the online Fisher.
    fisher_batch: int = 8
    replay_size: int = 200
    #: Store size for ``ewc+replay`` (``0``: ``replay_size``); 5,000 holds every past training
    #: example of either benchmark (chosen on validation against 1,000 and 2,500).
    replay_size_with_ewc: int = 5000
    #: In ``ewc+replay``, weigh replayed examples like the tasks they stand for (joint training's
    #: share) rather than like one task.
    replay_balanced: bool = True
    #: Epochs per task after the first, per method (a method's own hyper-parameter, chosen on
    #: validation); a method not listed trains ``epochs`` on every task. ``ewc+replay`` at 20:
    #: with its store of every past example, more passes bring it to joint training's forgetting.
    later_epochs: dict[str, int] = field(default_factory=lambda: {"ewc+replay": 20})
    #: Dream cycle after every epoch of a later task: optimizer steps, synthetic inputs.
    dream_steps: int = 30
    dream_synthetic: int = 256
    #: Where R is measured: "test" (reported) or "val" (tuning).
    split: str = "test"


#: Router presets: the settings each was tuned with on the validation split (docs/benchmarks.md).
#: ``default`` is the engine's router width; ``wide`` (H 512, r_w 64) is where EWC++'s GPM meets the
#: ⅓-forgetting target on both benchmarks (its λ and thresholds were chosen for that width, by the
#: same rule: least forgetting with LA within 2 points of ``none``, validation seeds 0–3).
ROUTERS: dict[str, dict[str, Any]] = {
    "default": {},
    "wide": {
        "hidden": 512,
        "rank_w": 64,
        "lambdas": {"permuted": 500.0, "split": 2000.0},
        "gpm_thresholds": {"permuted": 0.99, "split": 0.95},
    },
}


def router_config(router: str = "default", **overrides: Any) -> ContinualConfig:
    """The :class:`ContinualConfig` of a router preset (``ROUTERS``), with ``overrides`` applied
    on top (any config field)."""
    if router not in ROUTERS:
        raise ConfigError(f"unknown router preset {router!r} (choose from {tuple(ROUTERS)})")
    return ContinualConfig(**{**ROUTERS[router], **overrides})


@dataclass
class Task:
    x_train: F32
    y_train: I64
    x_val: F32
    y_val: I64
    x_test: F32
    y_test: I64

    def eval_set(self, split: str) -> tuple[F32, I64]:
        """The validation or test images and labels."""
        return (self.x_val, self.y_val) if split == "val" else (self.x_test, self.y_test)


def _split(
    n_per_class: dict[int, npt.NDArray[np.int64]], rng: np.random.Generator
) -> tuple[I64, I64, I64]:
    train, val, test = [], [], []
    for idx in n_per_class.values():
        idx = rng.permutation(idx)
        a, b = round(0.6 * len(idx)), round(0.8 * len(idx))
        train.append(idx[:a])
        val.append(idx[a:b])
        test.append(idx[b:])
    return np.concatenate(train), np.concatenate(val), np.concatenate(test)


def make_tasks(benchmark: str, seed: int, n_tasks: int = 5) -> tuple[list[Task], int]:
    """The task sequence and the number of classes of the shared head."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32)
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    classes = {c: np.flatnonzero(y == c) for c in range(10)}
    tr, va, te = _split(classes, rng)
    tasks: list[Task] = []
    c = np.ascontiguousarray  # column indexing returns Fortran order; the model reads rows
    if benchmark == "permuted":
        for t in range(n_tasks):
            perm = np.arange(64) if t == 0 else rng.permutation(64)
            tasks.append(
                Task(c(x[tr][:, perm]), y[tr], c(x[va][:, perm]), y[va], c(x[te][:, perm]), y[te])
            )
        return tasks, 10
    if benchmark == "split":
        if n_tasks > 5:
            raise ValueError("split digits has at most 5 tasks")
        for t in range(n_tasks):
            pair = (2 * t, 2 * t + 1)
            m = [np.isin(y[s], pair) for s in (tr, va, te)]
            tasks.append(
                Task(
                    c(x[tr][m[0]]),
                    y[tr][m[0]] % 2,
                    c(x[va][m[1]]),
                    y[va][m[1]] % 2,
                    c(x[te][m[2]]),
                    y[te][m[2]] % 2,
                )
            )
        return tasks, 2
    raise ValueError(f"unknown benchmark {benchmark!r} (choose from {BENCHMARKS})")


def run_method(
    method: str,
    tasks: Sequence[Task],
    n_classes: int,
    cfg: ContinualConfig,
    seed: int,
    lam: float,
    gpm_threshold: float = GPM_THRESHOLD,
) -> tuple[npt.NDArray[np.float64], list[float]]:
    """Trains ``method`` over the task sequence (``lam``: EWC++ λ of the ``ewc`` methods,
    ``gpm_threshold``: energy threshold of ``gpm``); returns ``R`` (on ``cfg.split``) and the
    task-1 accuracy after every epoch."""
    if method not in ALL_METHODS:
        raise ValueError(f"unknown method {method!r} (choose from {ALL_METHODS})")
    if cfg.split not in SPLITS:
        raise ValueError(f"unknown split {cfg.split!r} (choose from {SPLITS})")
    if cfg.epochs < 1 or any(e < 1 for e in cfg.later_epochs.values()):
        raise ValueError(f"epochs must be >= 1 (epochs={cfg.epochs}, later={cfg.later_epochs})")
    dim = tasks[0].x_train.shape[1]
    store = "replay" in method or method == "dream"
    size = cfg.replay_size_with_ewc if method == "ewc+replay" else 0
    model = _sona.RouterClassifier(
        dim,
        n_classes,
        hidden=cfg.hidden,
        rank_w=cfg.rank_w,
        lr=cfg.lr,
        ewc_lambda=lam if "ewc" in method else 0.0,
        ewc_gamma=cfg.gamma,
        fisher_batch=cfg.fisher_batch,
        replay_capacity=(size or cfg.replay_size) if store else 0,
        replay_batch=cfg.batch if "replay" in method else 0,
        seed=seed * 7919 + 17,
        replay_balanced=cfg.replay_balanced and method == "ewc+replay",
        gpm_threshold=gpm_threshold if method == "gpm" else 0.0,
    )
    n = len(tasks)
    r = np.zeros((n, n))
    curve: list[float] = []
    x0, y0 = tasks[0].eval_set(cfg.split)
    for i, task in enumerate(tasks):
        if method == "joint":
            xs = np.ascontiguousarray(np.concatenate([t.x_train for t in tasks[: i + 1]]))
            ys = np.concatenate([t.y_train for t in tasks[: i + 1]])
        else:
            xs, ys = task.x_train, task.y_train
        for _epoch in range(task_epochs(cfg, method, i)):
            model.fit(xs, ys, epochs=1, batch=cfg.batch)
            if method == "dream" and model.stored > 0:
                model.dream(steps=cfg.dream_steps, synthetic=cfg.dream_synthetic)
            curve.append(model.accuracy(x0, y0))
        model.end_task(task.x_train if method == "gpm" else None)
        if store:
            model.remember(task.x_train, task.y_train)
        for j, t in enumerate(tasks):
            r[i, j] = model.accuracy(*t.eval_set(cfg.split))
    return r, curve


def task_epochs(cfg: ContinualConfig, method: str, task: int) -> int:
    """Training epochs of ``method`` on task ``task`` (0-based): ``epochs`` on the first task,
    ``later_epochs[method]`` (default ``epochs``) on the others."""
    return cfg.epochs if task == 0 else cfg.later_epochs.get(method, cfg.epochs)


def metrics(r: npt.NDArray[np.float64]) -> dict[str, float]:
    """ACC, BWT, forgetting (``sona-metrics``) and LA of an accuracy matrix (fractions in,
    percentage points out)."""
    m = continual_metrics(r)
    la = float(np.mean(np.diag(r)))
    return {
        "ACC": 100 * m.acc,
        "BWT": 100 * m.bwt,
        "forgetting": 100 * m.forgetting,
        "LA": 100 * la,
    }


def run(
    cfg: ContinualConfig, progress: bool = True, on_run: Callable[[str], None] | None = None
) -> dict[str, Any]:
    """Runs every benchmark × method × seed; returns the JSON-ready results."""
    from threadpoolctl import threadpool_limits
    from tqdm import tqdm

    seeds = range(cfg.first_seed, cfg.first_seed + cfg.seeds)
    jobs = [(b, m, s) for b in cfg.benchmarks for s in seeds for m in cfg.methods]
    out: dict[str, Any] = {"config": asdict(cfg), "results": {}}
    raw: dict[tuple[str, str], list[tuple[npt.NDArray[np.float64], list[float]]]] = {}
    cache: dict[tuple[str, int], tuple[list[Task], int]] = {}
    t0 = time.perf_counter()
    # The model runs in Rust; numpy only slices: BLAS threads would only contend.
    limiter = threadpool_limits(1)
    for b, m, s in tqdm(jobs, desc="continual", disable=not progress, unit="run"):
        if (b, s) not in cache:
            cache[(b, s)] = make_tasks(b, s, cfg.n_tasks)
        tasks, n_classes = cache[(b, s)]
        lam = cfg.lambdas.get(b, 1e3)
        if m == "ewc+replay":
            lam = cfg.lambdas_with_replay.get(b, lam)
        gpm = cfg.gpm_thresholds.get(b, GPM_THRESHOLD)
        raw.setdefault((b, m), []).append(run_method(m, tasks, n_classes, cfg, s, lam, gpm))
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
    plt = pyplot()

    benches = list(results["results"])
    fig, axes = plt.subplots(1, len(benches), figsize=(6 * len(benches), 4), squeeze=False)
    cfg = results["config"]
    for ax, b in zip(axes[0], benches, strict=True):
        for m, res in results["results"][b].items():
            # x = tasks trained so far (fractional within a task): methods may differ in epochs.
            later = cfg.get("later_epochs", {}).get(m, cfg["epochs"])
            xs = [(e + 1) / cfg["epochs"] for e in range(cfg["epochs"])]
            for t in range(1, cfg["n_tasks"]):
                xs += [t + (e + 1) / later for e in range(later)]
            ax.plot(xs[: len(res["curve_task1"])], res["curve_task1"], label=m)
        for k in range(1, cfg["n_tasks"]):
            ax.axvline(k, color="grey", lw=0.8, ls=":")
        ax.set_title(f"{b}-digits: accuracy on task 1")
        ax.set_xlabel("tasks trained (evaluated after every epoch)")
        ax.set_ylabel("task-1 test accuracy (%)")
        ax.legend()
    save_figure(fig, path)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--benchmark", choices=[*BENCHMARKS, "both"], default="both", help="which task sequence"
    )
    parser.add_argument("--seeds", type=int, default=5, help="seeds (mean ± std over them)")
    parser.add_argument(
        "--first-seed",
        type=int,
        default=0,
        help="first seed (validation tuning used seeds 0-3; higher ones are fresh)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        choices=ALL_METHODS,
        default=list(METHODS),
        metavar="METHOD",
        help=f"any of {', '.join(ALL_METHODS)}",
    )
    parser.add_argument(
        "--epochs", type=int, default=ContinualConfig.epochs, help="training epochs per task"
    )
    parser.add_argument(
        "--later-epochs",
        type=int,
        default=None,
        metavar="N",
        help="epochs per task after the first for ewc+replay (default: 20, chosen on validation)",
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
        "--gpm-threshold",
        type=float,
        default=None,
        help="GPM energy threshold for every benchmark (default: the tuned per-benchmark values)",
    )
    parser.add_argument(
        "--router",
        choices=tuple(ROUTERS),
        default="default",
        help="router preset: default (H 128, r_w 32) or wide (H 512, r_w 64), each with the λ "
        "and GPM thresholds tuned for it",
    )
    parser.add_argument(
        "--hidden", type=int, default=None, help="router hidden width H (default: the preset's)"
    )
    parser.add_argument(
        "--rank-w", type=int, default=None, help="router input rank r_w (default: the preset's)"
    )
    parser.add_argument("--lr", type=float, default=ContinualConfig.lr, help="Adam learning rate")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="where R is measured: test (report) or val (tuning)",
    )
    parser.add_argument("--json", metavar="OUT.json", help="write the results as JSON")
    parser.add_argument("--plot", metavar="OUT.png", help="write the forgetting curves as PNG")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def config_from_args(args: argparse.Namespace) -> ContinualConfig:
    sizes = {"hidden": args.hidden, "rank_w": args.rank_w}
    cfg = router_config(
        args.router,
        **{k: v for k, v in sizes.items() if v is not None},
        benchmarks=BENCHMARKS if args.benchmark == "both" else (args.benchmark,),
        methods=tuple(args.methods),
        seeds=args.seeds,
        first_seed=args.first_seed,
        epochs=args.epochs,
        n_tasks=args.tasks,
        lr=args.lr,
        split=args.split,
    )
    if args.later_epochs is not None:
        cfg.later_epochs = {"ewc+replay": args.later_epochs}
    if args.lam is not None:
        cfg.lambdas = {b: float(args.lam) for b in BENCHMARKS}
        cfg.lambdas_with_replay = dict(cfg.lambdas)
    if args.first_seed < 0:
        raise ConfigError(f"--first-seed must be >= 0, got {args.first_seed}")
    if args.gpm_threshold is not None:
        if not 0.0 < args.gpm_threshold <= 1.0:
            raise ConfigError(f"--gpm-threshold must be in (0, 1], got {args.gpm_threshold}")
        cfg.gpm_thresholds = {b: float(args.gpm_threshold) for b in BENCHMARKS}
    return cfg


def main(args: argparse.Namespace) -> int:
    results = run(config_from_args(args), progress=not args.no_progress)
    print(format_tables(results))
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"wrote {args.plot}")
    return 0


def _register() -> None:
    from sona import cli

    cli.EVALS["continual"] = (
        "continual learning of SONA's router on Permuted/Split-Digits: none / EWC++ / replay / "
        "dream / joint (§11.2)",
        add_arguments,
        main,
    )


_register()
