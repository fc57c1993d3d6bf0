"""snn_triton.study: the statistics against hand computations and published t tables, the
study.json layout, and plots that read with one epoch as with fifty."""

import math

import pytest

from snn_triton import study

# Student's t, two-sided 95% (the 0.975 quantile): Abramowitz & Stegun table 26.10 and NIST's
# e-Handbook table 1.3.6.7.2; dof 1 and 2 also in closed form: tan(0.475 pi), 0.95 sqrt(2 / (1 - 0.95^2)).
T_975 = {
    1: 12.7062047,
    2: 4.30265273,
    3: 3.18244631,
    4: 2.77644511,
    5: 2.57058184,
    9: 2.26215716,
    10: 2.22813885,
    30: 2.04227246,
    100: 1.98397152,
}


@pytest.mark.parametrize("dof", sorted(T_975))
def test_t_quantile_matches_the_tables(dof):
    assert study.t_quantile(0.95, dof) == pytest.approx(T_975[dof], abs=5e-8)


def test_t_quantile_closed_forms():
    assert study.t_quantile(0.95, 1) == pytest.approx(math.tan(0.475 * math.pi), rel=1e-10)
    assert study.t_quantile(0.95, 2) == pytest.approx(0.95 * math.sqrt(2 / (1 - 0.95**2)), rel=1e-10)
    assert study.t_quantile(0.5, 1) == pytest.approx(1.0, rel=1e-10)  # Cauchy: P(|T| <= 1) = 1/2


def test_describe_by_hand():
    d = study.describe([0.80, 0.82, 0.87])
    assert d["n"] == 3 and d["values"] == [0.80, 0.82, 0.87]
    assert d["mean"] == pytest.approx(0.83) and d["std"] == pytest.approx(math.sqrt(0.0026 / 2))
    assert study.describe([0.8])["std"] is None, "no sample std of one value"


def test_paired_difference_by_hand():
    """d = (0.02, 0.01, 0.04): mean 0.023333, sample std 0.0152753, standard error 0.0088192,
    half width 4.3026527 * 0.0088192 = 0.0379458."""
    p = study.paired_difference([0.80, 0.82, 0.87], [0.78, 0.81, 0.83])
    assert p["differences"] == pytest.approx([0.02, 0.01, 0.04])
    assert p["mean_difference"] == pytest.approx(0.0233333, abs=1e-7)
    assert p["std"] == pytest.approx(0.0152753, abs=1e-7)
    assert p["ci95"] == pytest.approx([0.0233333 - 0.0379458, 0.0233333 + 0.0379458], abs=2e-7)
    assert p["method"] == "paired t, 2 degrees of freedom"


@pytest.mark.parametrize("n", [1, 2])
def test_no_interval_below_three_seeds(n):
    p = study.paired_difference([0.8, 0.9][:n], [0.7, 0.85][:n])
    assert p["ci95"] is None and "needs at least 3" in p["method"] and p["n"] == n
    assert p["mean_difference"] == pytest.approx([0.1, 0.075][n - 1])


def history(surrogate, beta, seed, accuracies):
    return [
        {
            "surrogate": surrogate,
            "beta": beta,
            "seed": seed,
            "epoch": e + 1,
            "test_acc": acc,
            "train_acc": acc,
            "epoch_time": 1.0,
            "images_per_s": 1.0,
        }
        for e, acc in enumerate(accuracies)
    ]


def test_study_json_layout_and_pairing():
    """Two surrogates, seeds 2, 0, 1 (as listed); esser lacks seed 1: values in seed order, the
    pair only over seeds 0 and 2."""
    runs = {
        ("superspike", 10.0, 2): [0.5, 0.7, 0.6],
        ("superspike", 10.0, 0): [0.6, 0.8, 0.7],
        ("superspike", 10.0, 1): [0.4, 0.5, 0.6],
        ("esser", 1.0, 2): [0.5, 0.6, 0.6],
        ("esser", 1.0, 0): [0.6, 0.6, 0.65],
    }
    s = study.study({run: history(*run, acc) for run, acc in runs.items()})
    assert s["seeds"] == [0, 1, 2] and list(s["surrogates"]) == ["superspike", "esser"]
    spike = s["surrogates"]["superspike"]
    assert spike["best_test_acc"]["values"] == [0.8, 0.6, 0.7] and spike["final_test_acc"]["values"] == [0.7, 0.6, 0.6]
    assert spike["best_test_acc"]["std"] == pytest.approx(0.1)
    assert spike["test_acc_per_epoch"] == {
        "epoch": [1, 2, 3],
        "mean": pytest.approx([0.5, 2 / 3, 19 / 30]),
        "min": [0.4, 0.5, 0.6],
        "max": [0.6, 0.8, 0.7],
    }
    best, final = s["pairwise"]
    assert (best["a"], best["b"], best["metric"], best["seeds"]) == ("superspike", "esser", "best_test_acc", [0, 2])
    assert best["differences"] == pytest.approx([0.8 - 0.65, 0.7 - 0.6]) and best["ci95"] is None
    assert final["metric"] == "final_test_acc" and final["differences"] == pytest.approx([0.05, 0.0])
    md = study.study_markdown(s)
    assert (
        "| superspike | 10 | 3 | 70.00 ± 10.00 |" in md
        and "| superspike − esser | best_test_acc | +12.50 | — | 2 |" in md
    )


def test_a_sweep_names_its_groups_by_beta():
    runs = {
        (s, beta, seed): history(s, beta, seed, [0.5 + seed / 10])
        for s, beta in (("superspike", 5.0), ("superspike", 20.0), ("esser", 1.0))
        for seed in (0, 1, 2)
    }
    s = study.study(runs)
    assert list(s["surrogates"]) == ["superspike beta=5", "superspike beta=20", "esser"]
    assert s["surrogates"]["superspike beta=20"]["beta"] == 20.0
    assert len(s["pairwise"]) == 3 * 2 and all(p["ci95"] == [0.0, 0.0] for p in s["pairwise"])


def marked(line) -> bool:
    return line.get_marker() not in (None, "", "None", " ")


@pytest.mark.parametrize("epochs", [1, 50])
def test_plots_read_with_one_epoch_and_with_fifty(epochs):
    """x axis from 0.5 to epochs + 0.5 with whole-epoch ticks only; with few epochs every train
    and test point is marked (one epoch is a point, which a line without markers never shows),
    and study.png has a min-max bar per point; with fifty, lines and the band alone."""
    runs = {
        (s, beta, seed): history(s, beta, seed, [0.5 + 0.3 * e / 50 + 0.01 * seed for e in range(epochs)])
        for s, beta in (("superspike", 10.0), ("esser", 1.0))
        for seed in (0, 1, 2)
    }
    for fig in (study.plot_accuracy(runs), study.plot_study(study.study(runs))):
        ax = fig.axes[0]
        assert ax.get_xlim() == (0.5, epochs + 0.5)
        ticks = [t for t in ax.get_xticks() if 0.5 <= t <= epochs + 0.5]
        assert ticks and all(t == int(t) for t in ticks) and 1 <= len(ticks) <= 11
        lines = [line for line in ax.get_lines() if len(line.get_xdata()) == epochs]
        assert lines and all(marked(line) == (epochs == 1) for line in lines)
        assert ax.get_legend() is not None
    bars = [c for c in ax.containers if c.__class__.__name__ == "ErrorbarContainer"]
    assert len(bars) == (2 if epochs == 1 else 0)
    assert len(ax.collections) >= 2, "a min-max band per group"
