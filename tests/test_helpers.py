"""The test helpers that decide what runs: covering arrays must hold every value and every pair."""

import itertools

import pytest
from helpers import covering


@pytest.mark.parametrize(
    "factors",
    [
        dict(a=[1, 2], b="xyz", c=range(7), d=range(5)),
        dict(a=range(4), b=range(5), c=range(3), d=range(4)),
        dict(a=[None, 0.0], b=[(), (1,)]),
        dict(a=range(3)),
    ],
    ids=["lif-grid", "spike-grid", "tiny", "one-factor"],
)
def test_covering_array_holds_every_pair_in_fewer_rows_than_the_product(factors):
    rows = covering(**factors)
    values = [list(v) for v in factors.values()]
    assert all(len(r) == len(values) for r in rows)
    for (a, va), (b, vb) in itertools.combinations(enumerate(values), 2):
        assert {(r[a], r[b]) for r in rows} == set(itertools.product(va, vb))
    for f, vs in enumerate(values):
        assert {r[f] for r in rows} == set(vs)
    product = 1
    for vs in values:
        product *= len(vs)
    # two factors: every pair is a row of the product; more: a fraction of it
    assert len(rows) == product if len(values) <= 2 else len(rows) <= product // 4
    assert covering(**factors) == rows, "deterministic: the same tests in every run"
