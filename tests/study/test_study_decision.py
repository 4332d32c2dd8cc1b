"""examples/study/decision.py: the rule of docs/study/DESIGN.md on made-up seeds."""

import pytest

from examples.study import decision


def indicators(**changes):
    """A seed that meets every 'confirmed' criterion, then `changes`."""
    values = {
        "gamma_median": 0.3,
        "plateaued": True,
        "W": 0.7,
        "W0": 0.55,
        "E": 1.08,
        "K_points": 2.0,
        "K_ci95_points": [1.0, 3.0],
    }
    values.update(changes)
    return values


def verdict(*seeds):
    return decision.arm_verdict([decision.seed_verdict(s) for s in seeds])


def test_every_seed_selective_and_used_confirms():
    assert verdict(indicators(), indicators(W=0.61, W0=0.55)) == "CONFIRMED"


@pytest.mark.parametrize(
    "change",
    [
        {"gamma_median": 0.09},
        {"W": 0.59},
        {"W0": 0.66},  # W - W0 = 0.04: not above the null by 0.05
        {"E": 1.02},
        {"K_ci95_points": [-0.1, 3.0]},
    ],
)
def test_one_failed_criterion_in_one_seed_leaves_it_open(change):
    assert verdict(indicators(), indicators(**change)) == "OPEN"


def test_selective_gates_whose_knockout_costs_nothing_are_unused():
    unused = indicators(K_points=0.1, K_ci95_points=[-0.2, 0.4])
    assert verdict(unused, unused) == "SELECTIVE BUT UNUSED"
    # A costly but uncertain knock-out is neither used nor unused.
    assert (
        verdict(unused, indicators(K_points=0.5, K_ci95_points=[-0.1, 1.1]))
        == "OPEN"
    )


def test_small_plateaued_gamma_or_no_margin_over_the_null_refutes():
    small = indicators(gamma_median=0.04, plateaued=True)
    blind = indicators(W=0.61, W0=0.6)  # large gamma, at the null
    assert verdict(small, blind) == "REFUTED"
    # Small but still growing: the budget, not SGE, may be the limit.
    growing = indicators(gamma_median=0.04, plateaued=False, W=0.7, W0=0.5)
    assert verdict(small, growing) == "OPEN"
    assert decision.arm_verdict([]) == "NO DATA"


def test_failed_criteria_are_named():
    v = decision.seed_verdict(indicators(gamma_median=0.01, E=1.0))
    assert v["failed"] == ["median |gamma| >= 0.1", "E >= 1.03"]
    assert not v["selective"] and v["used"]


def test_the_midpoint_epoch_is_where_the_cosine_is_half_done():
    assert decision.midpoint_epoch(18, 1) == 10
    assert decision.midpoint_epoch(1, 1) == 1
