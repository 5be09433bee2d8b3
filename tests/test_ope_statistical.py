"""Monte-Carlo properties of the estimators and intervals on the live-stream simulator.

Every replication is a fresh simulation (new viewers, streams, contexts, slates, actions and
rewards) with a fixed seed, so these tests are deterministic. The truth of a replication is the
simulator's exact policy value conditional on its contexts and slates. Unbiasedness is judged by
the mean of (estimate - truth) over seeds: it must lie within 4 standard errors of that mean (the
across-seed sd / sqrt(seeds)); under the null a 4-SE miss has probability about 1e-4 per check.
Coverage is judged over 200 replications against thresholds fixed in advance (issue 3).

Estimators get RowInputs built straight from the Simulation (no Parquet round trip: that path is
checked to agree with these formulas exactly in tests/test_estimators.py). DR uses the simulator's
exact E[r | x, a] or a deliberately wrong model, so no reward model is fitted here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from livegate.datasets.simulator import EPSILON, SimulationConfig, _slot_moments, policy_matrix, simulate
from livegate.ope import inference
from livegate.ope.estimators import RowInputs, dr, ips, snips, sndr

pytestmark = pytest.mark.statistical

ALPHA = 0.05


def dense_policy(sim, name: str) -> np.ndarray:
    """(n_rows, slate_size) matrix of a policy on the simulator's slates."""
    return policy_matrix(sim, name)


def random_policy(sim, seed: int, concentration: float) -> np.ndarray:
    """An arbitrary stochastic policy on each slate (Dirichlet rows); small concentration -> near-deterministic."""
    rng = np.random.default_rng(seed)
    return rng.dirichlet(np.full(sim.slates.shape[1], concentration), size=sim.slates.shape[0])


def sim_inputs(sim, probs: np.ndarray, metric: str) -> tuple[RowInputs, float]:
    """RowInputs with the exact reward model, and the exact value of the policy `probs`."""
    rows = np.arange(probs.shape[0])
    slot = np.argmax(sim.slates == sim.logs["action"].to_numpy()[:, None], axis=1)
    expected = sim.expected[metric]
    q_pi = np.sum(probs * expected, axis=1)
    x = RowInputs(reward=sim.logs[metric].to_numpy(np.float64),
                  weight=probs[rows, slot] / sim.logs["propensity"].to_numpy(),
                  q_logged=expected[rows, slot], q_pi=q_pi)
    return x, float(np.mean(q_pi))


def within_4_se(errors) -> tuple[bool, str]:
    e = np.asarray(errors, dtype=np.float64)
    mean, se = float(e.mean()), float(e.std(ddof=1) / math.sqrt(e.size))
    return abs(mean) <= 4 * se, f"mean error {mean:.4g}, 4 SE = {4 * se:.4g}"


# =================================================================================================
# unbiasedness
# =================================================================================================

def test_dr_with_the_true_reward_model_is_unbiased_for_any_policy():
    """DR with q = E[r|x,a]: its error is mean(w (r - q)), mean zero for every policy, whatever its overlap.

    Tolerance: 4 exact standard errors of the across-seed mean error. Given the contexts, the rows'
    errors are independent with Var(w (r - q) | x) = sum_a pi_e(a|x)^2 / pi_0(a|x) (E[r^2|x,a] - q^2),
    from the simulator's closed-form second moments. The sample sd would not do for gift_value: its
    lognormal amounts behind a ~0.1% gift rate are so heavy-tailed that 30 seeds understate the
    spread about 8-fold (measured), and the test then fails on an unbiased estimator."""
    seeds, n = range(30), 4_000
    errors: dict[tuple[str, str], list[float]] = {}
    variances: dict[tuple[str, str], list[float]] = {}
    for seed in seeds:
        sim = simulate(SimulationConfig(n_rounds=n, seed=500 + seed))
        second = _slot_moments(sim.world, sim.slates, 1, power=2)
        logging = dense_policy(sim, "logging")
        policies = {name: dense_policy(sim, name) for name in ("better", "worse", "greedy")}
        policies["dirichlet_1"] = random_policy(sim, seed, 1.0)
        policies["dirichlet_0.1"] = random_policy(sim, seed, 0.1)
        for metric in ("click", "watch_seconds", "gift_value"):
            q = sim.expected[metric]
            for name, probs in policies.items():
                x, truth = sim_inputs(sim, probs, metric)
                errors.setdefault((name, metric), []).append(dr(x).value() - truth)
                row_var = np.sum(probs ** 2 / logging * (second[metric] - q ** 2), axis=1)
                variances.setdefault((name, metric), []).append(float(row_var.sum()) / n ** 2)
    for key, e in errors.items():
        mean = float(np.mean(e))
        se = math.sqrt(float(np.sum(variances[key]))) / len(e)
        assert abs(mean) <= 4 * se, f"{key}: mean error {mean:.4g}, 4 exact SE = {4 * se:.4g}"
        # and the exact SE agrees with the sample one where the tails are tame
        if key[1] == "click":
            assert float(np.std(e, ddof=1)) / math.sqrt(len(e)) == pytest.approx(se, rel=0.5), key


@pytest.mark.parametrize("metric", ["click", "watch_seconds"])
def test_ips_snips_dr_are_unbiased_over_seeds(metric):
    """200 simulations of 5,000 rounds. DR here uses a wrong model, q = E[r|x,a] / 2 + the logging
    policy's value (a function of the context only): double robustness keeps it unbiased."""
    seeds, n = range(200), 5_000
    errors: dict[tuple[str, str], list[float]] = {}
    for seed in seeds:
        sim = simulate(SimulationConfig(n_rounds=n, seed=10_000 + seed))
        offset = sim.truth["policies"]["logging"][metric]
        for name in ("better", "worse"):
            x, truth = sim_inputs(sim, dense_policy(sim, name), metric)
            assert truth == pytest.approx(sim.truth["policies"][name][metric], rel=1e-12)
            wrong = RowInputs(reward=x.reward, weight=x.weight, q_logged=x.q_logged / 2 + offset,
                              q_pi=x.q_pi / 2 + offset)
            for est, value in (("ips", ips(x).value()), ("snips", snips(x).value()), ("dr", dr(x).value()),
                               ("dr_wrong_model", dr(wrong).value()), ("sndr", sndr(x).value())):
                errors.setdefault((name, est), []).append(value - truth)
    for key, e in errors.items():
        ok, msg = within_4_se(e)
        assert ok, f"{metric} {key}: {msg}"


# =================================================================================================
# coverage
# =================================================================================================

COVERAGE_REPS = 200
COVERAGE_ROUNDS = 10_000


@pytest.fixture(scope="module")
def click_coverage():
    """Coverage of the exact click value over 200 simulations of 10,000 rounds.

    Click is the metric: a bounded reward, for which the normal approximation is a fair demand and
    the empirical-Bernstein bound has an a-priori range. At 3,000-5,000 rounds the normal intervals
    of the `worse` policy (ESS about 10% of n, weights up to 80) reached only 89-92%: the per-row
    terms w r are skewed, and a sample that misses the rare heavy rows has both a low estimate and a
    low standard error. At 10,000 rounds they reach 94-96%. On watch_seconds (lognormal and heavy
    tailed) the normal intervals fall short even at 20,000 rounds (see the report of issue 3).

    The a-priori range of a Bernstein term: the logging policy gives every slate action at least
    EPSILON / slate_size, so w <= slate_size / EPSILON = 80, click in {0, 1} and q in [0, 1].
    """
    hits: dict[str, list[bool]] = {}
    width_ratio: dict[str, list[float]] = {}
    for rep in range(COVERAGE_REPS):
        sim = simulate(SimulationConfig(n_rounds=COVERAGE_ROUNDS, seed=100_000 + rep))
        w_max = sim.config.slate_size / EPSILON
        base, base_truth = sim_inputs(sim, dense_policy(sim, "logging"), "click")
        assert np.all(base.weight == pytest.approx(1.0, rel=1e-12))
        for name in ("better", "worse"):
            x, truth = sim_inputs(sim, dense_policy(sim, name), "click")
            # Poisson bootstrap percentile intervals of snips and dr (500 resamples, renormalised)
            boot_terms = [snips(x), dr(x)]
            reps = inference.bootstrap_replicates(boot_terms, 500, seed=rep)
            for j, est in enumerate(("snips", "dr")):
                b = inference.bootstrap_interval(reps, np.eye(2)[j], boot_terms[j].value(), ALPHA)
                hits.setdefault(f"{name} {est} bootstrap", []).append(b.ci_low <= truth <= b.ci_high)
            for est, fn in (("snips", snips), ("dr", dr), ("ips", ips)):
                terms = fn(x)
                iv = inference.normal_interval([terms], [1.0], ALPHA)
                hits.setdefault(f"{name} {est}", []).append(iv.ci_low <= truth <= iv.ci_high)
                # the paired difference with the logging policy, on the same rows
                d = inference.normal_interval([terms, fn(base)], [1.0, -1.0], ALPHA)
                hits.setdefault(f"{name} {est} - logging", []).append(d.ci_low <= truth - base_truth <= d.ci_high)
                if est == "snips":
                    continue
                # ips terms w r lie in [0, w_max]; dr terms q_pi + w (r - q) in [-w_max, 1 + w_max]
                term_range = (0.0, w_max) if est == "ips" else (-w_max, 1.0 + w_max)
                b = inference.bernstein_interval([terms], [1.0], ALPHA, term_range)
                hits.setdefault(f"{name} {est} bernstein", []).append(b.ci_low <= truth <= b.ci_high)
                width_ratio.setdefault(f"{name} {est}", []).append((b.ci_high - b.ci_low) / (iv.ci_high - iv.ci_low))
    return ({k: float(np.mean(v)) for k, v in hits.items()},
            {k: float(np.min(v)) for k, v in width_ratio.items()})


@pytest.mark.parametrize("policy", ["better", "worse"])
@pytest.mark.parametrize("estimator", ["snips", "dr"])
def test_normal_intervals_cover_at_least_90_percent(click_coverage, policy, estimator):
    coverage, _ = click_coverage
    assert coverage[f"{policy} {estimator}"] >= 0.90, coverage
    assert coverage[f"{policy} {estimator} - logging"] >= 0.90, coverage
    assert coverage[f"{policy} {estimator} bootstrap"] >= 0.90, coverage


@pytest.mark.parametrize("policy", ["better", "worse"])
@pytest.mark.parametrize("estimator", ["ips", "dr"])
def test_bernstein_intervals_cover_at_least_95_percent_and_are_wider(click_coverage, policy, estimator):
    coverage, min_width_ratio = click_coverage
    assert coverage[f"{policy} {estimator} bernstein"] >= 0.95, coverage
    assert min_width_ratio[f"{policy} {estimator}"] > 1.0, min_width_ratio


# =================================================================================================
# bootstrap against the normal interval
# =================================================================================================

def test_poisson_bootstrap_agrees_with_the_normal_interval_on_a_large_sample():
    """100,000 well-behaved rows (gamma weights with mean 1, Bernoulli rewards), 4,000 resamples.

    With B resamples the bootstrap se has relative Monte-Carlo error 1 / sqrt(2 B) = 1.1%, and the
    2.5% percentile's distance from the centre sqrt(0.025 * 0.975 / B) / (phi(1.96) * 1.96) = 2.1%;
    the 10% tolerance is over 4.5 of those standard errors (fixed seed). With 1,000 resamples a
    half-width was 11% off at one seed and within 0.5% at 20,000: Monte-Carlo noise, not bias."""
    rng = np.random.default_rng(2024)
    n = 100_000
    p_click = rng.uniform(0.05, 0.4, n)
    r = (rng.random(n) < p_click).astype(np.float64)
    w = rng.gamma(4.0, 0.25, n)
    q = np.clip(p_click + rng.normal(0, 0.05, n), 0, 1)
    x = RowInputs(reward=r, weight=w, q_logged=q, q_pi=q * 1.2)
    base = RowInputs(reward=r, weight=np.ones(n), q_logged=q, q_pi=q)
    terms = [ips(x), snips(x), dr(x), sndr(x), snips(base)]
    reps = inference.bootstrap_replicates(terms, 4_000, seed=7)
    contrasts = [[1, 0, 0, 0, 0], [0, 1, 0, 0, 0], [0, 0, 1, 0, 0], [0, 0, 0, 1, 0], [0, 1, 0, 0, -1]]
    for coefs in contrasts:
        picked = [t for t, c in zip(terms, coefs) if c]
        used = [c for c in coefs if c]
        normal = inference.normal_interval(picked, used, ALPHA)
        boot = inference.bootstrap_interval(reps, coefs, normal.value, ALPHA)
        assert boot.value == normal.value
        assert boot.se == pytest.approx(normal.se, rel=0.10), coefs
        assert boot.ci_low - boot.value == pytest.approx(normal.ci_low - normal.value, rel=0.10), coefs
        assert boot.ci_high - boot.value == pytest.approx(normal.ci_high - normal.value, rel=0.10), coefs
