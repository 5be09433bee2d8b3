"""Ground truth for the estimators beyond the DESIGN formulas: mips, pm-ips, switch-dr, dr-os.

A small synthetic bandit where everything is known: K streams in C categories, a context x, an
epsilon-softmax logging policy and a softmax candidate, and a click probability that depends on the
stream only through its category (the "no direct effect" assumption of Saito & Joachims 2022).
"""
from __future__ import annotations

import numpy as np
import pytest

from livegate.ope.estimators import RowInputs, dr_os, ips, mips, pm_ips, switch_dr

K, C = 40, 4
CATEGORY = np.arange(K) % C


def _softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _bandit(seed: int, n: int = 4_000):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    slope = np.linspace(-1, 1, K)
    pi0 = 0.8 * _softmax(np.outer(x, slope)) + 0.2 / K
    pie = _softmax(np.outer(x, -2 * slope) + 0.5 * (CATEGORY == 1))
    mu = 1 / (1 + np.exp(-(0.3 * x[:, None] + 0.4 * CATEGORY[None, :] - 1.0)))  # depends on the category only
    a = (rng.random(n)[:, None] > np.cumsum(pi0, axis=1)).sum(axis=1)
    r = (rng.random(n) < mu[np.arange(n), a]).astype(float)
    rows = np.arange(n)
    w = pie[rows, a] / pi0[rows, a]
    same = CATEGORY[None, :] == CATEGORY[a][:, None]
    cw = (pie * same).sum(axis=1) / (pi0 * same).sum(axis=1)
    truth = float(np.mean((pie * mu).sum(axis=1)))
    inputs = RowInputs(reward=r, weight=w, q_logged=mu[rows, a], q_pi=(pie * mu).sum(axis=1), category_weight=cw)
    return inputs, truth


@pytest.fixture(scope="module")
def replications():
    return [_bandit(seed) for seed in range(60)]


def _bias_z(replications, estimator, **params) -> float:
    """(mean estimate - mean truth) in standard errors of the across-seed mean."""
    errors = np.array([estimator(x, **params).value() - truth for x, truth in replications])
    return float(errors.mean() / (errors.std(ddof=1) / np.sqrt(len(errors))))


def test_mips_is_unbiased_and_beats_ips_on_variance(replications):
    # 4-standard-error tolerance over 60 fixed seeds
    assert abs(_bias_z(replications, mips)) < 4
    assert abs(_bias_z(replications, ips)) < 4
    sd = lambda est: np.std([est(x).value() for x, _ in replications])  # noqa: E731
    assert sd(mips) < 0.8 * sd(ips)


def test_switch_dr_and_dr_os_with_the_true_model_are_unbiased(replications):
    for estimator, params in ((switch_dr, {"tau": 3.0}), (dr_os, {"lambda_": 2.0})):
        assert abs(_bias_z(replications, estimator, **params)) < 4, estimator.__name__


def test_pm_ips_is_consistent(replications):
    # its bias (from shrinking weights) vanishes with n: on 20x the rows the estimate is within
    # 4 standard errors of the truth, and closer than on small samples on average
    x, truth = _bandit(seed=123, n=80_000)
    terms = pm_ips(x)
    se = np.std(terms.weighted, ddof=1) / np.sqrt(x.n)
    assert abs(terms.value() - truth) < 4 * se
    small = np.mean([abs(pm_ips(xs).value() - t) for xs, t in replications])
    assert abs(terms.value() - truth) < small
