"""Pure sequential-statistics primitives: e-processes, confidence sequences, change detectors.

Everything here keeps O(1) state per metric (running sums, or log-likelihoods on a fixed
grid) and is updated once per window; nothing reads a clock or does I/O.

References
----------
- M. Lindon, A. Malek (2022). Anytime-valid inference for multinomial count data. NeurIPS.
- M. Lindon, C. Sanden, V. Shirikian (2022). Rapid regression detection in software
  deployments through sequential testing. KDD. (Counting processes with a common
  time-varying intensity: condition on the total count, test the arms' shares.)
- W. Hoeffding (1963). Probability inequalities for sums of bounded random variables. JASA,
  Theorem 4 (sampling without replacement is dominated in convex order by sampling with).
- H. Robbins (1970). Statistical methods related to the law of the iterated logarithm.
- R. Johari, P. Koomen, L. Pekelis, D. Walsh (2017/2022). Peeking at A/B tests / Always
  valid inference: continuous monitoring of A/B tests. (mSPRT with a normal mixture.)
- S. R. Howard, A. Ramdas, J. McAuliffe, J. Sekhon (2021). Time-uniform, nonparametric,
  nonasymptotic confidence sequences. Annals of Statistics. (Normal-mixture boundaries,
  one- and two-sided.)
- I. Waudby-Smith, D. Arbour, R. Sinha, E. H. Kennedy, A. Ramdas (2021/2024). Time-uniform
  central limit theory and asymptotic confidence sequences. (Plug-in variance.)
- J. Ville (1939). Etude critique de la notion de collectif. (P(sup_t M_t >= 1/a) <= a for a
  non-negative supermartingale with M_0 = 1.)
- J. Shin, A. Ramdas, A. Rinaldo (2024). E-detectors: a nonparametric framework for sequential
  change detection. New England J. Statistics in Data Science. (ARL >= c for e-detectors.)
- E. S. Page (1954). Continuous inspection schemes (CUSUM); M. Pollak (1985) (Shiryaev-Roberts).
- E. B. Wilson (1927). Probable inference, the law of succession, and statistical inference.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy.special import log_ndtr
from scipy.stats import norm

FloatArray = npt.NDArray[np.float64]


def logsumexp(values: FloatArray) -> float:
    """log(sum(exp(values))) without overflow; -inf for an all -inf input. (A lean version of
    scipy.special.logsumexp, whose array-API dispatch costs ~50 us per call.)"""
    top = float(np.max(values))
    if top == -math.inf:
        return -math.inf
    return top + math.log(float(np.sum(np.exp(values - top))))


def log_grid(step: float, limit: float) -> FloatArray:
    """Symmetric grid of log rate ratios -limit..limit with the given step (0 included)."""
    half = round(limit / step)
    return np.arange(-half, half + 1, dtype=np.float64) * step


def gaussian_grid_log_weights(
    grid: FloatArray, scale: float, mask: npt.NDArray[np.bool_], center: float = 0.0
) -> FloatArray:
    """Log prior weights proportional to a N(center, scale^2) density on ``grid[mask]``,
    summing to one; -inf elsewhere."""
    log_w = np.where(mask, -0.5 * ((grid - center) / scale) ** 2, -np.inf)
    return np.asarray(log_w - logsumexp(log_w[mask]), dtype=np.float64)


class ConditionalRateTest:
    """Anytime-valid comparison of two arms' bad-event rates, conditional on each window's
    total count of bad events.

    In window t the canary has ``x_c`` bad events out of ``n_c`` trials and the baseline
    ``x_b`` out of ``n_b``. Given the window's total N = x_c + x_b and the trial counts, the
    canary's count is (for rare events, or exactly for Poisson counts) Binomial(N, p_t) with
    p_t = s_t e^psi / (s_t e^psi + 1 - s_t), where s_t = n_c / (n_c + n_b) is the canary's
    share of trials *in that window* and psi the log rate ratio canary / baseline
    (Lindon & Malek 2022; Lindon, Sanden & Shirikian 2022). Conditioning removes any base
    rate common to both arms, however it varies over time, and s_t may drift freely.

    The log-likelihood ratio against psi = 0 is kept on a fixed grid of psi values:
    ``loglik[j] = sum_t x_c psi_j - N log(s_t e^psi_j + 1 - s_t)``. The one-sided e-value
    for "canary worse" mixes the likelihood ratios with a discrete prior on psi > 0,
    proportional to a N(prior_center, prior_scale^2) density on the grid (the default puts
    most weight on rate ratios 1.2 to 3, where a canary judge needs its power). It is a test
    supermartingale under H0: psi <= 0 in every window: for Bernoulli trials the exact null
    law of x_c given N is hypergeometric, which Hoeffding's (1963) Theorem 4 puts below the
    binomial in convex order, and each mixture component is a convex increasing function of
    x_c. Ville's inequality then gives P(sup_t e_t >= 1/a) <= a.

    A canary can turn worse after a good start, and a plain mixture started at the first
    window would first have to climb out of the evidence for "not worse" gathered meanwhile.
    So the e-value also mixes over *start times*: a product of likelihood ratios started at
    window tau is a test supermartingale too (it is 1 before tau), so with start weights
    pi_tau summing to 1, E_t = sum_j w_j sum_{tau <= t} pi_tau prod_{s=tau..t} L_s(psi_j)
    (plus the weight not yet started) is one as well, updated in O(grid) per window by the
    Shiryaev-Roberts-like recursion A_t = (A_{t-1} + pi_t) L_t (Shin, Ramdas & Rinaldo 2024
    use the same device for e-detectors; here the weights sum to one, so Ville's bound and
    not only an ARL holds). ``first_start_weight`` goes to the first window; the rest to a
    new start every ``restart_every`` windows, half geometric with mean ``restart_mean``
    starts, half proportional to 1 / (k (k + 1)) for the k-th start (a heavy tail for long
    deployments).

    The confidence sequence inverts the two-sided mixture test of each grid value psi_k:
    M_k = sum_j pi_j exp(loglik_j - loglik_k) with a normal prior pi; psi_k is excluded once
    M_k >= 1/alpha. The reported bounds are widened by one grid step so that a true value
    between grid points stays covered (log M is convex in psi). Away from psi = 0 the
    binomial law is an approximation of the noncentral hypergeometric one (exact for Poisson
    counts, close for rare events).
    """

    def __init__(
        self,
        *,
        step: float = 0.05,
        limit: float = 4.0,
        prior_center: float = 0.45,
        prior_scale: float = 0.3,
        cs_prior_scale: float = 0.5,
        first_start_weight: float = 0.8,
        restart_every: int = 12,
        restart_mean: float = 30.0,
    ) -> None:
        if not 0.0 < first_start_weight <= 1.0 or restart_every < 1 or restart_mean < 1.0:
            raise ValueError("start weights must be a probability split over restarts")
        self.first_start_weight = first_start_weight
        self.restart_every = restart_every
        self.restart_mean = restart_mean
        self.grid = log_grid(step, limit)
        self.step = step
        self._exp_grid = np.exp(self.grid)
        self.log_weights_one_sided = gaussian_grid_log_weights(
            self.grid, prior_scale, self.grid > 0, center=prior_center
        )
        self.log_weights_two_sided = gaussian_grid_log_weights(
            self.grid, cs_prior_scale, np.ones_like(self.grid, dtype=bool)
        )
        self.loglik = np.zeros_like(self.grid)
        self.log_started = np.full_like(self.grid, -np.inf)
        self.windows = 0
        self.log_e_max = 0.0
        self.events_canary = 0
        self.events_baseline = 0
        self.trials_canary = 0
        self.trials_baseline = 0

    def update(self, x_c: int, n_c: int, x_b: int, n_b: int) -> None:
        """Fold in one window's counts (bad events and trials per arm)."""
        if not (0 <= x_c <= n_c and 0 <= x_b <= n_b):
            raise ValueError("counts must satisfy 0 <= events <= trials")
        self.events_canary += x_c
        self.events_baseline += x_b
        self.trials_canary += n_c
        self.trials_baseline += n_b
        log_start = self.log_start_weight(self.windows)
        if log_start > -math.inf:
            self.log_started = np.logaddexp(self.log_started, log_start)
        self.windows += 1
        total = x_c + x_b
        if total == 0 or n_c == 0 or n_b == 0:
            return
        share = n_c / (n_c + n_b)
        step = x_c * self.grid - total * np.log1p(share * (self._exp_grid - 1.0))
        self.loglik += step
        self.log_started += step
        self.log_e_max = max(self.log_e_max, self.log_e_value())

    def log_start_weight(self, window: int) -> float:
        """log pi of a product started at the 0-based ``window`` (-inf if none starts there)."""
        if window == 0:
            return math.log(self.first_start_weight)
        if window % self.restart_every or self.first_start_weight >= 1.0:
            return -math.inf
        k = window // self.restart_every
        rho = 1.0 / self.restart_mean
        weight = 0.5 * rho * (1.0 - rho) ** (k - 1) + 0.5 / (k * (k + 1))
        return math.log((1.0 - self.first_start_weight) * weight)

    def log_e_value(self) -> float:
        """Log of the one-sided (canary worse) e-value now, mixed over psi and start times."""
        return float(logsumexp(self.log_weights_one_sided + self.log_started))

    def log_e_max_value(self) -> float:
        """Log of the running maximum of the e-value; 1/exp of it is the anytime p-value."""
        return self.log_e_max

    def estimate(self) -> float:
        """Maximum-likelihood rate ratio on the grid (1.0 before any events)."""
        if not self.loglik.any():
            return 1.0
        return float(self._exp_grid[int(np.argmax(self.loglik))])

    def confidence_sequence(self, alpha: float) -> tuple[float, float]:
        """Anytime-valid (1 - alpha) bounds on the rate ratio canary / baseline."""
        log_m = float(logsumexp(self.log_weights_two_sided + self.loglik)) - self.loglik
        inside = np.flatnonzero(log_m < math.log(1.0 / alpha))
        if inside.size == 0:
            inside = np.array([int(np.argmin(log_m))])
        lo, hi = int(inside[0]) - 1, int(inside[-1]) + 1
        lower = 0.0 if lo < 0 else float(self._exp_grid[lo])
        upper = math.inf if hi >= self.grid.size else float(self._exp_grid[hi])
        return lower, upper


class NormalMixtureMeanTest:
    """Anytime-valid comparison of two arms' means from per-window sums (Robbins' normal
    mixture; Johari et al. 2017/2022; Howard et al. 2021).

    Window t contributes the within-window difference d_t = mean_c - mean_b, whose variance
    v_t = s_c^2 / n_c + s_b^2 / n_b uses each arm's pooled within-window variance over all
    earlier windows (a predictable running plug-in, as in Johari et al.). Differencing
    inside a window cancels any drift in the mean common to both arms. With
    S = sum d_t / v_t and V = sum 1 / v_t, the likelihood ratio for a difference delta is
    exp(delta S - delta^2 V / 2). Mixing delta over N(0, 1/rho) gives the two-sided boundary
    |S - delta V| < sqrt((V + rho) (log((V + rho) / rho) + 2 log(1/alpha))), i.e. the
    confidence sequence; mixing over the half-normal on the "worse" side gives the one-sided
    e-value 2 sqrt(rho / (V + rho)) exp(S^2 / (2 (V + rho))) Phi(S / sqrt(V + rho)).
    Validity is exact for Gaussian window means with known variances and asymptotic with the
    plug-in variance (Waudby-Smith et al. 2021); hence the minimum-observation guard. Being
    predictable, the plug-in cannot down-weight a window for its own outcome.
    So that each difference is close to normal even for a small canary, consecutive windows
    are pooled into one block until each arm has ``min_block`` observations (at 5 s windows
    and a canary of 10 requests/s or more, every window is its own block).
    ``worse_sign`` is +1 when a larger canary mean is worse (cost), -1 when smaller is worse
    (quality).
    """

    def __init__(
        self, *, rho: float, worse_sign: int, min_observations: int = 20, min_block: int = 20
    ) -> None:
        if worse_sign not in (1, -1):
            raise ValueError("worse_sign must be +1 or -1")
        self.rho = rho
        self.worse_sign = worse_sign
        self.min_observations = min_observations
        # Per arm: n, sum, sumsq over all windows; pooled within-window SS and its dof.
        self.n = [0, 0]
        self.total = [0.0, 0.0]
        self.within_ss = [0.0, 0.0]
        self.within_dof = [0, 0]
        self.min_block = min_block
        self.block_n = [0, 0]
        self.block_sum = [0.0, 0.0]
        self.s = 0.0
        self.v = 0.0
        self.log_e_max = 0.0

    def _variance(self, arm: int) -> float | None:
        if self.within_dof[arm] < max(self.min_observations, 2):
            return None
        return max(self.within_ss[arm] / self.within_dof[arm], 1e-12)

    def update(self, canary: tuple[int, float, float], baseline: tuple[int, float, float]) -> None:
        """Fold in one window: (count, sum, sum of squares) per arm."""
        var_c, var_b = self._variance(0), self._variance(1)  # predictable: earlier windows
        for arm, (n, total, sumsq) in enumerate((canary, baseline)):
            if n <= 0:
                continue
            self.n[arm] += n
            self.total[arm] += total
            self.within_ss[arm] += max(sumsq - total * total / n, 0.0)
            self.within_dof[arm] += n - 1
            self.block_n[arm] += n
            self.block_sum[arm] += total
        (n_c, n_b), (sum_c, sum_b) = self.block_n, self.block_sum
        if var_c is None or var_b is None:
            self.block_n, self.block_sum = [0, 0], [0.0, 0.0]  # it only taught the variance
        elif min(n_c, n_b) >= self.min_block:
            d = sum_c / n_c - sum_b / n_b
            v = var_c / n_c + var_b / n_b
            self.s += d / v
            self.v += 1.0 / v
            self.log_e_max = max(self.log_e_max, self.log_e_value())
            self.block_n, self.block_sum = [0, 0], [0.0, 0.0]

    @property
    def active(self) -> bool:
        """Whether any window has entered the statistic yet."""
        return self.v > 0.0

    def log_e_value(self) -> float:
        """Log of the one-sided (canary worse) normal-mixture e-value now."""
        return log_one_sided_normal_mixture(self.worse_sign * self.s, self.v, self.rho)

    def estimate(self) -> float:
        """Inverse-variance weighted mean difference canary - baseline (0 before data)."""
        return self.s / self.v if self.v > 0.0 else 0.0

    def confidence_sequence(self, alpha: float) -> tuple[float, float]:
        """Anytime-valid (1 - alpha) bounds on the mean difference canary - baseline."""
        if self.v <= 0.0:
            return -math.inf, math.inf
        radius = normal_mixture_radius(self.v, self.rho, alpha)
        return (self.s - radius) / self.v, (self.s + radius) / self.v

    def means(self) -> tuple[float, float]:
        """Pooled means (canary, baseline); 0 for an arm without data."""
        (n_c, n_b), (t_c, t_b) = self.n, self.total
        return (t_c / n_c if n_c else 0.0), (t_b / n_b if n_b else 0.0)


def log_one_sided_normal_mixture(s: float, v: float, rho: float) -> float:
    """log of 2 sqrt(rho/(v+rho)) exp(s^2/(2(v+rho))) Phi(s/sqrt(v+rho)) (Howard et al. 2021,
    one-sided normal mixture): the mixture of exp(l s - l^2 v/2) over l ~ N(0, 1/rho), l > 0."""
    total = v + rho
    return float(
        math.log(2.0)
        + 0.5 * math.log(rho / total)
        + s * s / (2.0 * total)
        + log_ndtr(s / math.sqrt(total))
    )


def normal_mixture_radius(v: float, rho: float, alpha: float) -> float:
    """Two-sided normal-mixture boundary on |S|: sqrt((v+rho)(log((v+rho)/rho) + 2 log(1/a)))."""
    return math.sqrt((v + rho) * (math.log((v + rho) / rho) + 2.0 * math.log(1.0 / alpha)))


def wilson_interval(successes: int, trials: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson (1927) score interval for a binomial proportion (fixed-sample, not anytime)."""
    if trials <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= trials:
        raise ValueError("successes must be in [0, trials]")
    z = float(norm.ppf(0.5 + confidence / 2.0))
    phat = successes / trials
    denom = 1.0 + z * z / trials
    centre = (phat + z * z / (2 * trials)) / denom
    half = z * math.sqrt(phat * (1 - phat) / trials + z * z / (4 * trials * trials)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


class MixtureCusum:
    """A weighted mixture of CUSUM statistics, one per alternative: an e-detector.

    For alternative k with per-window log-likelihood ratio l_t^k the log CUSUM is
    C_t^k = max(C_{t-1}^k, 0) + l_t^k (Page 1954), so exp(C_t^k) = max_j prod_{i=j..t} L_i^k,
    which is at most the Shiryaev-Roberts statistic R_t^k = sum_j prod_{i=j..t} L_i^k. Under
    no change E[L] = 1, so E[R_t^k] = t and sum_k w_k R^k is an e-detector (Shin, Ramdas &
    Rinaldo 2024); alarming at sum_k w_k exp(C^k) >= c therefore has average run length to a
    false alarm of at least c windows. Weights split the same way across metrics keep the
    bound for the union of alarms.
    """

    def __init__(self, log_weights: FloatArray) -> None:
        self.log_weights = np.asarray(log_weights, dtype=np.float64)
        self.c = np.full_like(self.log_weights, -np.inf)

    def update(self, log_lr: FloatArray) -> None:
        """Fold in one window's log-likelihood ratios, one per alternative."""
        self.c = np.maximum(self.c, 0.0) + log_lr

    def log_statistic(self) -> float:
        """log sum_k w_k exp(C^k); -inf before the first window."""
        return float(logsumexp(self.log_weights + self.c))

    def reset(self) -> None:
        """Forget the statistic (restart after an alarm has been handled)."""
        self.c[:] = -np.inf


def binomial_log_lr(x: int, n: int, p0: float, ratios: FloatArray) -> FloatArray:
    """log LR of Binomial(n, r p0) against Binomial(n, p0) for each rate ratio r at x events."""
    p1 = np.minimum(ratios * p0, 1.0 - 1e-12)
    return np.asarray(
        x * np.log(p1 / p0) + (n - x) * (np.log1p(-p1) - math.log1p(-p0)), dtype=np.float64
    )


def gaussian_log_lr(
    n: int, mean: float, mu0: float, sigma0: float, shifts: FloatArray
) -> FloatArray:
    """log LR of n observations with sample mean ``mean`` under N(mu0 + k sigma0, sigma0^2)
    against N(mu0, sigma0^2), for each shift k (in units of sigma0) in ``shifts``."""
    z = (mean - mu0) / sigma0
    return np.asarray(n * (shifts * z - 0.5 * shifts * shifts), dtype=np.float64)
