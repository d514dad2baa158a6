"""Every statistic of streams.detector.stats against hand computation and scipy references."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, special, stats

from streams.detector.stats import (
    ConditionalRateTest,
    MixtureCusum,
    NormalMixtureMeanTest,
    binomial_log_lr,
    gaussian_grid_log_weights,
    gaussian_log_lr,
    log_grid,
    log_one_sided_normal_mixture,
    logsumexp,
    normal_mixture_radius,
    wilson_interval,
)


def test_logsumexp_matches_scipy() -> None:
    values = np.array([-1000.0, -2.5, 0.0, 3.0, 700.0])
    assert logsumexp(values) == pytest.approx(float(special.logsumexp(values)))
    assert logsumexp(np.array([-np.inf, -np.inf])) == -math.inf
    assert logsumexp(np.array([-np.inf, 1.0])) == pytest.approx(1.0)


def test_grid_and_weights() -> None:
    grid = log_grid(0.5, 2.0)
    assert grid.tolist() == [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0]
    log_w = gaussian_grid_log_weights(grid, 1.0, grid > 0, center=0.5)
    w = np.exp(log_w)
    assert w.sum() == pytest.approx(1.0)
    assert np.all(w[grid <= 0] == 0.0)
    dens = stats.norm.pdf(grid[grid > 0], loc=0.5)
    assert w[grid > 0] == pytest.approx(dens / dens.sum())


def _one_window_test() -> ConditionalRateTest:
    test = ConditionalRateTest(
        step=0.25, limit=2.0, prior_center=0.5, prior_scale=0.5, first_start_weight=1.0
    )
    test.update(3, 10, 1, 30)
    return test


def test_conditional_loglik_is_the_binomial_likelihood_ratio() -> None:
    # Canary share s = 10/40; given 4 bad events, the canary's count is Binomial(4, p(psi)).
    test = _one_window_test()
    s = 0.25
    for psi, loglik in zip(test.grid, test.loglik, strict=True):
        p = s * math.exp(psi) / (s * math.exp(psi) + 1 - s)
        expected = stats.binom.logpmf(3, 4, p) - stats.binom.logpmf(3, 4, s)
        assert loglik == pytest.approx(expected, abs=1e-12)


def test_conditional_e_value_is_the_prior_mixture() -> None:
    test = _one_window_test()
    grid = test.grid
    dens = np.where(grid > 0, stats.norm.pdf(grid, loc=0.5, scale=0.5), 0.0)
    weights = dens / dens.sum()
    expected = float(np.sum(weights * np.exp(test.loglik)))
    assert math.exp(test.log_e_value()) == pytest.approx(expected)
    assert test.log_e_max_value() == pytest.approx(max(0.0, math.log(expected)))


@pytest.mark.parametrize(("n_c", "n_b", "total"), [(10, 30, 4), (5, 5, 6), (50, 450, 12)])
def test_conditional_e_value_has_mean_at_most_one_under_the_exact_null(
    n_c: int, n_b: int, total: int
) -> None:
    """Under H0 the canary's share of `total` bad events is hypergeometric; E[e] <= 1 (and
    = 1 under the binomial it is built on): the supermartingale step of the e-process."""
    test = ConditionalRateTest(first_start_weight=1.0)
    support = np.arange(total + 1)
    # The mixture evaluated at every possible canary count (a count beyond n_c only enters
    # the binomial reference, through the same formula).
    s = n_c / (n_c + n_b)
    log_lr = support[:, None] * test.grid - total * np.log1p(s * (np.exp(test.grid) - 1.0))
    e_values = np.array([math.exp(logsumexp(test.log_weights_one_sided + row)) for row in log_lr])
    hyper = stats.hypergeom.pmf(support, n_c + n_b, n_c, total)
    binom = stats.binom.pmf(support, total, s)
    assert float(np.dot(hyper, e_values)) <= 1.0 + 1e-12
    assert float(np.dot(binom, e_values)) == pytest.approx(1.0)
    for x_c in range(max(0, total - n_b), min(n_c, total) + 1):
        one = ConditionalRateTest(first_start_weight=1.0)
        one.update(x_c, n_c, total - x_c, n_b)
        assert math.exp(one.log_e_value()) == pytest.approx(e_values[x_c])


def test_start_time_mixture_by_hand() -> None:
    test = ConditionalRateTest(first_start_weight=0.8, restart_every=2, restart_mean=4.0)
    weights = [0.8, 0.0, 0.2 * (0.5 * 0.25 + 0.5 / 2), 0.0, 0.2 * (0.5 * 0.25 * 0.75 + 0.5 / 6)]
    assert [math.exp(test.log_start_weight(t)) for t in range(5)] == pytest.approx(weights)
    total = sum(math.exp(test.log_start_weight(t)) for t in range(0, 400_000, 2))
    assert 0.999 < total <= 1.0
    windows = [(2, 50, 3, 450), (0, 50, 0, 450), (4, 60, 2, 440)]
    steps = []
    for x_c, n_c, x_b, n_b in windows:
        test.update(x_c, n_c, x_b, n_b)
        s, total = n_c / (n_c + n_b), x_c + x_b
        steps.append(x_c * test.grid - total * np.log1p(s * (np.exp(test.grid) - 1.0)))
    # Started at window 0 (all three steps) and at window 2 (the last step only).
    started = 0.8 * np.exp(steps[0] + steps[1] + steps[2]) + weights[2] * np.exp(steps[2])
    expected = float(np.sum(np.exp(test.log_weights_one_sided) * started))
    assert math.exp(test.log_e_value()) == pytest.approx(expected)
    assert test.loglik == pytest.approx(steps[0] + steps[1] + steps[2])


def test_conditional_windows_without_events_or_an_arm_carry_no_evidence() -> None:
    test = ConditionalRateTest()
    test.update(0, 50, 0, 450)
    test.update(0, 0, 2, 10)  # an arm without trials carries no information
    assert not test.loglik.any()
    assert test.estimate() == 1.0
    assert test.confidence_sequence(0.05) == (0.0, math.inf)
    with pytest.raises(ValueError):
        test.update(5, 4, 0, 10)


def test_conditional_estimate_and_confidence_sequence() -> None:
    # Constant share 0.5, 200 canary vs 100 baseline bad events: rate ratio MLE = 2.
    test = ConditionalRateTest()
    for _ in range(10):
        test.update(20, 1000, 10, 1000)
    assert test.estimate() == pytest.approx(2.0, rel=0.03)
    lower, upper = test.confidence_sequence(0.05)
    assert 1.0 < lower < 2.0 < upper < 4.0
    # Inversion: grid points strictly inside the bounds have mixture e-value < 1/alpha.
    grid_in = (np.exp(test.grid) > lower * 1.0001) & (np.exp(test.grid) < upper / 1.0001)
    log_w = gaussian_grid_log_weights(test.grid, 0.5, np.ones_like(test.grid, dtype=bool))
    log_m = logsumexp(log_w + test.loglik) - test.loglik
    assert np.all(log_m[grid_in][1:-1] < math.log(20.0))
    assert math.exp(test.log_e_value()) > 20.0


def test_conditional_test_ignores_a_common_base_rate_and_a_drifting_split() -> None:
    """Exactly proportional bad events (the null's expectation) in windows with very
    different base rates and splits leave the e-value below 1."""
    test = ConditionalRateTest()
    for share, rate in [(0.1, 0.01), (0.5, 0.2), (0.3, 0.05), (0.05, 0.5)]:
        n_c, n_b = round(1000 * share), round(1000 * (1 - share))
        test.update(round(n_c * rate), n_c, round(n_b * rate), n_b)
    assert test.log_e_max_value() == 0.0
    assert math.exp(test.log_e_value()) < 1.0


def test_one_sided_normal_mixture_matches_numerical_integration() -> None:
    for s, v, rho in [(3.0, 4.0, 1.0), (-2.0, 10.0, 0.5), (15.0, 50.0, 25.0)]:

        def integrand(lam: float, s: float = s, v: float = v, rho: float = rho) -> float:
            half_normal = 2.0 * float(stats.norm.pdf(lam, scale=1.0 / math.sqrt(rho)))
            return math.exp(lam * s - lam * lam * v / 2.0) * half_normal

        value, _ = integrate.quad(integrand, 0.0, np.inf)
        assert log_one_sided_normal_mixture(s, v, rho) == pytest.approx(math.log(value), rel=1e-7)


def test_two_sided_radius_is_where_the_normal_mixture_reaches_one_over_alpha() -> None:
    v, rho, alpha = 37.0, 4.0, 0.05
    r = normal_mixture_radius(v, rho, alpha)

    def integrand(lam: float) -> float:
        return math.exp(lam * r - lam * lam * v / 2.0) * float(stats.norm.pdf(lam, scale=rho**-0.5))

    value, _ = integrate.quad(integrand, -np.inf, np.inf)
    assert value == pytest.approx(1.0 / alpha, rel=1e-7)


def _window(values: list[float]) -> tuple[int, float, float]:
    arr = np.asarray(values)
    return int(arr.size), float(arr.sum()), float(np.square(arr).sum())


def test_mean_test_by_hand() -> None:
    test = NormalMixtureMeanTest(rho=4.0, worse_sign=1, min_observations=2, min_block=1)
    canary1, baseline1 = [1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 3.0]
    test.update(_window(canary1), _window(baseline1))
    assert not test.active  # the first window only estimates the variances (predictable)
    var_c, var_b = float(np.var(canary1, ddof=1)), float(np.var(baseline1, ddof=1))
    test.update(_window([2.0, 4.0]), _window([1.0, 1.0, 2.0]))
    d, v = 3.0 - 4.0 / 3.0, var_c / 2 + var_b / 3
    assert (test.s, test.v) == pytest.approx((d / v, 1 / v))
    assert test.estimate() == pytest.approx(d)
    lower, upper = test.confidence_sequence(0.05)
    radius = normal_mixture_radius(1 / v, 4.0, 0.05)
    assert (lower, upper) == pytest.approx((d - radius * v, d + radius * v))
    assert test.log_e_value() == pytest.approx(log_one_sided_normal_mixture(d / v, 1 / v, 4.0))
    assert test.means() == pytest.approx((12.0 / 5.0, 10.0 / 7.0))
    # Pooled within-window variance of the canary now: (2 + 2) / (2 + 1).
    assert test.within_ss[0] / test.within_dof[0] == pytest.approx(4.0 / 3.0)


def test_mean_test_waits_for_enough_observations() -> None:
    test = NormalMixtureMeanTest(rho=4.0, worse_sign=1, min_observations=5, min_block=1)
    for _ in range(3):
        test.update(_window([1.0, 2.0]), _window([1.0, 3.0, 4.0]))
    assert not test.active  # the canary has 3 within-window degrees of freedom < 5
    assert test.confidence_sequence(0.05) == (-math.inf, math.inf)


def test_mean_test_pools_small_windows_into_blocks() -> None:
    test = NormalMixtureMeanTest(rho=4.0, worse_sign=1, min_observations=2, min_block=3)
    test.update(_window([1.0, 2.0, 3.0]), _window([0.0, 2.0, 4.0, 6.0, 8.0]))
    test.update(_window([2.0, 6.0]), _window([1.0, 3.0]))
    assert not test.active  # window 1 taught the variances; window 2 alone is too small
    test.update(_window([4.0]), _window([5.0]))
    # One block, windows 2 and 3: canary [2, 6, 4], baseline [1, 3, 5]. Variances from
    # windows 1 and 2: canary (2 + 8) / (2 + 1), baseline (40 + 2) / (4 + 1).
    d, v = 4.0 - 3.0, (10.0 / 3.0) / 3 + (42.0 / 5.0) / 3
    assert (test.s, test.v) == pytest.approx((d / v, 1 / v))
    assert test.block_n == [0, 0]


def test_mean_test_direction_for_quality() -> None:
    worse_when_lower = NormalMixtureMeanTest(rho=1.0, worse_sign=-1, min_observations=2)
    for _ in range(20):
        worse_when_lower.update(_window([0.5, 0.6, 0.55]), _window([0.8, 0.9, 0.85]))
    assert worse_when_lower.estimate() < 0
    assert worse_when_lower.log_e_value() > math.log(1000)
    with pytest.raises(ValueError):
        NormalMixtureMeanTest(rho=1.0, worse_sign=0)


def test_wilson_interval_reference_values() -> None:
    lower, upper = wilson_interval(5, 20, 0.95)
    assert (lower, upper) == pytest.approx((0.1119, 0.4687), abs=5e-5)
    assert wilson_interval(0, 10)[0] == 0.0
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        wilson_interval(3, 2)


def test_binomial_and_gaussian_log_lr_match_scipy() -> None:
    ratios = np.array([1.5, 2.0])
    got = binomial_log_lr(7, 300, 0.01, ratios)
    expected = stats.binom.logpmf(7, 300, 0.01 * ratios) - stats.binom.logpmf(7, 300, 0.01)
    assert got == pytest.approx(expected)
    rng = np.random.default_rng(3)
    x = rng.normal(0.3, 2.0, size=25)
    shifts = np.array([0.1, 0.5])
    got = gaussian_log_lr(x.size, float(x.mean()), 0.3, 2.0, shifts)
    expected = np.array(
        [
            np.sum(stats.norm.logpdf(x, 0.3 + k * 2.0, 2.0) - stats.norm.logpdf(x, 0.3, 2.0))
            for k in shifts
        ]
    )
    assert got == pytest.approx(expected)


def test_mixture_cusum_recursion_by_hand() -> None:
    cusum = MixtureCusum(np.log(np.array([0.5, 0.5])))
    assert cusum.log_statistic() == -math.inf
    steps = [np.array([1.0, -2.0]), np.array([-3.0, 1.0]), np.array([0.5, 0.5])]
    for step in steps:
        cusum.update(step)
    # Alternative 1: max(1, 0) - 3 = -2; then max(-2, 0) + 0.5 = 0.5.
    # Alternative 2: -2; then max(-2, 0) + 1 = 1; then 1.5.
    assert cusum.c.tolist() == [0.5, 1.5]
    assert cusum.log_statistic() == pytest.approx(
        math.log(0.5 * math.exp(0.5) + 0.5 * math.exp(1.5))
    )
    cusum.reset()
    assert cusum.log_statistic() == -math.inf
