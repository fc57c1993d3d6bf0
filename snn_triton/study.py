"""What train.py reports over its runs: a line per run (summary.json, accuracy.png) and the study
over seeds (study.json, study.md, study.png).

A study trains every group, a (surrogate, beta), once per seed. For one seed the groups start from
the same weights and see the same batches (engine), so two groups are compared **paired**, seed by
seed: the difference of their accuracies on each seed, its mean, and a 95% paired t interval
(Student's t with n - 1 degrees of freedom) when there are at least 3 seeds. With fewer there is no
interval: 2 seeds give a t interval 12.7 standard errors wide, which says nothing, so the study
says so instead. The t quantile is computed here (A&S 26.7.3-4, exact for every integer dof), not
taken from scipy, which the project does not depend on.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

from .engine import run_name, write_atomic

METRICS = ("best_test_acc", "final_test_acc")
MIN_SEEDS_FOR_INTERVAL = 3
CONFIDENCE = 0.95

Run = tuple[str, float, int]  # (surrogate, beta, seed)
Group = tuple[str, float]  # (surrogate, beta)


# ---- statistics ----------------------------------------------------------------------------


def describe(values: list[float]) -> dict:
    """mean, sample standard deviation (n - 1; None below 2 values), n and the values."""
    n = len(values)
    mean = sum(values) / n if n else math.nan
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n >= 2 else None
    return {"mean": mean, "std": std, "n": n, "values": list(values)}


def t_probability(t: float, dof: int) -> float:
    """P(|T| <= t) for Student's t with `dof` degrees of freedom (Abramowitz & Stegun 26.7.3 for
    odd dof, 26.7.4 for even: finite sums in theta = atan(t / sqrt(dof)))."""
    theta = math.atan(t / math.sqrt(dof))
    c2 = math.cos(theta) ** 2
    if dof % 2:  # 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ... up to cos^(dof-3)))
        term, series = 1.0, 0.0 if dof == 1 else 1.0
        for k in range(1, (dof - 1) // 2):
            term *= 2 * k / (2 * k + 1) * c2
            series += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * series)
    term, series = 1.0, 1.0  # sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ... up to cos^(dof-2))
    for k in range(1, dof // 2):
        term *= (2 * k - 1) / (2 * k) * c2
        series += term
    return math.sin(theta) * series


def t_quantile(confidence: float, dof: int) -> float:
    """The t with P(|T| <= t) = `confidence` (two-sided), by bisection to 1e-12."""
    if not 0 < confidence < 1 or dof < 1:
        raise ValueError(f"need 0 < confidence < 1 and dof >= 1, got {confidence}, {dof}")
    low, high = 0.0, 1.0
    while t_probability(high, dof) < confidence:
        high *= 2
    while high - low > 1e-12 * high:
        mid = (low + high) / 2
        low, high = (mid, high) if t_probability(mid, dof) < confidence else (low, mid)
    return (low + high) / 2


def paired_difference(a: list[float], b: list[float]) -> dict:
    """a - b seed by seed: mean, sample std, n, the differences, and the 95% paired t interval
    (None, with the reason in `method`, below MIN_SEEDS_FOR_INTERVAL seeds)."""
    differences = [x - y for x, y in zip(a, b, strict=True)]
    d = describe(differences)
    n = d["n"]
    if n < MIN_SEEDS_FOR_INTERVAL:
        ci, method = (
            None,
            (f"none: {n} paired seed{'s' * (n != 1)}; a 95% interval needs at least {MIN_SEEDS_FOR_INTERVAL}"),
        )
    else:
        half = t_quantile(CONFIDENCE, n - 1) * d["std"] / math.sqrt(n)
        ci, method = [d["mean"] - half, d["mean"] + half], f"paired t, {n - 1} degrees of freedom"
    return {
        "mean_difference": d["mean"],
        "std": d["std"],
        "n": n,
        "differences": differences,
        "ci95": ci,
        "method": method,
    }


# ---- per run and per study ---------------------------------------------------------------


def run_result(history: list[dict]) -> dict:
    """Best and final test accuracy of one run, and how fast it trained."""
    best = max(history, key=lambda m: m["test_acc"])
    return {
        "best_test_acc": best["test_acc"],
        "best_epoch": best["epoch"],
        "final_test_acc": history[-1]["test_acc"],
        "epochs": len(history),
        "mean_epoch_time": sum(m["epoch_time"] for m in history) / len(history),
        "mean_images_per_s": sum(m["images_per_s"] for m in history) / len(history),
    }


def labels(groups: list[Group]) -> dict[Group, str]:
    """A group's name: the surrogate's, with its beta where a surrogate has several in the study."""
    betas = {s: sum(g[0] == s for g in groups) for s, _ in groups}
    return {g: g[0] if betas[g[0]] == 1 else f"{g[0]} beta={g[1]:g}" for g in groups}


def curve(histories: list[list[dict]]) -> dict:
    """Test accuracy per epoch over the seeds that reached it: mean, min and max."""
    epochs = sorted({m["epoch"] for h in histories for m in h})
    at = [[m["test_acc"] for h in histories for m in h if m["epoch"] == e] for e in epochs]
    return {
        "epoch": epochs,
        "mean": [sum(v) / len(v) for v in at],
        "min": [min(v) for v in at],
        "max": [max(v) for v in at],
    }


def study(histories: dict[Run, list[dict]]) -> dict:
    """study.json: per group, the best and final test accuracy over seeds (mean, sample std, n,
    values in seed order) and the test accuracy curve; per pair of groups and metric, the paired
    difference over the seeds both have."""
    done = {run: h for run, h in histories.items() if h}
    seeds = sorted({seed for _, _, seed in done})
    groups = list(dict.fromkeys((s, beta) for s, beta, _ in done))
    names = labels(groups)
    results = {run: run_result(h) for run, h in done.items()}

    def runs_of(group, among=seeds):
        return [(*group, seed) for seed in among if (*group, seed) in results]

    surrogates = {}
    for g in groups:
        runs = runs_of(g)
        surrogates[names[g]] = {
            "surrogate": g[0],
            "beta": g[1],
            "seeds": [r[2] for r in runs],
            **{metric: describe([results[r][metric] for r in runs]) for metric in METRICS},
            "test_acc_per_epoch": curve([done[r] for r in runs]),
        }
    pairwise = []
    for a, b in itertools.combinations(groups, 2):
        common = [seed for seed in seeds if (*a, seed) in results and (*b, seed) in results]
        for metric in METRICS:
            pairwise.append(
                {
                    "a": names[a],
                    "b": names[b],
                    "metric": metric,
                    "seeds": common,
                    **paired_difference(
                        [results[r][metric] for r in runs_of(a, common)],
                        [results[r][metric] for r in runs_of(b, common)],
                    ),
                }
            )
    return {"seeds": seeds, "surrogates": surrogates, "pairwise": pairwise}


def summary(histories: dict[Run, list[dict]], config: dict) -> dict:
    """summary.json: every run's best and final test accuracy and speed."""
    return {
        "config": config,
        "runs": {
            run_name(*run): {"surrogate": run[0], "beta": run[1], "seed": run[2], **run_result(h)}
            for run, h in histories.items()
            if h
        },
    }


# ---- text ----------------------------------------------------------------------------------


def _percent(d: dict) -> str:
    return f"{100 * d['mean']:.2f}" + (f" ± {100 * d['std']:.2f}" if d["std"] is not None else "")


def study_markdown(s: dict) -> str:
    """study.md: the groups (mean ± sample std over seeds, in %) and the paired differences (in
    percentage points), as Markdown tables."""
    lines = [
        f"Seeds: {', '.join(map(str, s['seeds']))}. Accuracies in %, mean ± sample std over seeds; "
        "differences in points, paired by seed.",
        "",
        "| surrogate | beta | seeds | best test acc | final test acc | best test acc per seed |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, g in s["surrogates"].items():
        per_seed = ", ".join(f"{100 * v:.2f}" for v in g["best_test_acc"]["values"])
        lines.append(
            f"| {name} | {g['beta']:g} | {g['best_test_acc']['n']} | {_percent(g['best_test_acc'])} | "
            f"{_percent(g['final_test_acc'])} | {per_seed} |"
        )
    if s["pairwise"]:
        lines += [
            "",
            "| difference | metric | mean | 95% interval | seeds | method |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for p in s["pairwise"]:
            ci = "—" if p["ci95"] is None else f"[{100 * p['ci95'][0]:+.2f}, {100 * p['ci95'][1]:+.2f}]"
            lines.append(
                f"| {p['a']} − {p['b']} | {p['metric']} | {100 * p['mean_difference']:+.2f} | {ci} | "
                f"{p['n']} | {p['method']} |"
            )
    return "\n".join(lines) + "\n"


def format_summary(summary_: dict, study_: dict) -> str:
    lines = [
        "",
        "Summary: best test accuracy per run",
        f"{'run':<28}{'best acc':>10}{'epoch':>7}{'final acc':>11}{'s/epoch':>9}{'img/s':>8}",
    ]
    for name, r in summary_["runs"].items():
        lines.append(
            f"{name:<28}{100 * r['best_test_acc']:>9.2f}%{r['best_epoch']:>7}"
            f"{100 * r['final_test_acc']:>10.2f}%{r['mean_epoch_time']:>9.1f}{r['mean_images_per_s']:>8.0f}"
        )
    return "\n".join(lines + ["", study_markdown(study_)])


# ---- plots ---------------------------------------------------------------------------------


def epoch_axis(ax, last_epoch: int) -> None:
    """Whole epochs on the x axis, with half an epoch of room on each side (one epoch is a
    point in the middle, not a line at the edge of a 0.95..1.05 axis)."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, last_epoch + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)


FEW_EPOCHS = 20  # up to this many epochs, every point is marked and has its min-max bar


def plot_accuracy(histories: dict[Run, list[dict]]):
    """accuracy.png: train (dashed, open squares) and test (solid, dots) accuracy of every run."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global state

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    last = 1
    for i, (run, history) in enumerate((r, h) for r, h in histories.items() if h):
        epochs, color = [m["epoch"] for m in history], f"C{i % 10}"
        few = len(epochs) <= FEW_EPOCHS
        ax.plot(
            epochs,
            [100 * m["test_acc"] for m in history],
            color=color,
            marker="o" if few else None,
            label=f"{run_name(*run)} test",
        )
        ax.plot(
            epochs,
            [100 * m["train_acc"] for m in history],
            color=color,
            linestyle="--",
            marker="s" if few else None,
            markerfacecolor="none",
            label=f"{run_name(*run)} train",
        )
        last = max(last, epochs[-1])
    epoch_axis(ax, last)
    ax.set_ylabel("accuracy (%)")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


def plot_study(s: dict):
    """study.png: per group, the mean test accuracy over seeds per epoch with a min-max band (and,
    up to FEW_EPOCHS epochs, a marker and a min-max bar at every epoch)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    last = 1
    for i, (name, g) in enumerate(s["surrogates"].items()):
        c, color = g["test_acc_per_epoch"], f"C{i % 10}"
        mean, low, high = ([100 * v for v in c[k]] for k in ("mean", "min", "max"))
        label = f"{name} (n={g['best_test_acc']['n']})"
        if len(c["epoch"]) <= FEW_EPOCHS:  # side by side, so that equal groups do not hide each other
            dodge = (i - (len(s["surrogates"]) - 1) / 2) * 0.06
            ax.errorbar(
                [e + dodge for e in c["epoch"]],
                mean,
                yerr=[[m - lo for m, lo in zip(mean, low)], [h - m for m, h in zip(mean, high)]],
                color=color,
                marker="o",
                capsize=4,
                label=label,
            )
        else:
            ax.plot(c["epoch"], mean, color=color, label=label)
        ax.fill_between(c["epoch"], low, high, color=color, alpha=0.2, linewidth=0)
        last = max(last, c["epoch"][-1] if c["epoch"] else 1)
    epoch_axis(ax, last)
    ax.set_title(f"test accuracy: mean over seeds, band min–max ({len(s['seeds'])} seeds)", fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig


# ---- files ---------------------------------------------------------------------------------


def write_reports(histories: dict[Run, list[dict]], config: dict, out_dir: Path) -> tuple[dict, dict]:
    """summary.json, accuracy.png, study.json, study.md and study.png in `out_dir`, each written
    whole or not at all; returns (summary, study)."""
    summary_, study_ = summary(histories, config), study(histories)
    for name, text in (
        ("summary.json", json.dumps(summary_, indent=2) + "\n"),
        ("study.json", json.dumps(study_, indent=2) + "\n"),
        ("study.md", study_markdown(study_)),
    ):
        write_atomic(out_dir / name, lambda f: f.write(text.encode()))
    for name, fig in (("accuracy.png", plot_accuracy(histories)), ("study.png", plot_study(study_))):
        write_atomic(out_dir / name, lambda f: fig.savefig(f, dpi=120, format="png"))
    return summary_, study_
