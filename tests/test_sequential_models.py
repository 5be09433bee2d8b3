"""Fitted-Q evaluation and MIS state density ratios (ope/sequential_models.py) on a tabular MDP solved exactly.

The MDP has 3 states (a categorical column), 3 actions, known transitions, a termination probability
per (state, action) and a hard end after HORIZON steps, so that the policy value (backward induction)
and the state-visitation ratios w_t(s) = d^pi_t(s) / d^mu_t(s) (forward recursion) are exact.

Tolerances come from the sampling error of the data at hand, with a fixed seed:
- the value: 4 standard errors of the efficient influence function evaluated with the exact Q, V and w
  (Kallus & Uehara 2020, double reinforcement learning). That is the asymptotic standard error of an
  efficient estimator, which tabular FQE is (Duan, Jia & Wang 2020; Yin & Wang 2020). Over 16 seeds
  the errors of this FQE had a standard deviation of 0.96 of it at gamma = 1, and over 10 seeds 1.3 of
  it at gamma = 0.9 (whose test allows 5);
- the ratios: 4 bootstrap standard errors (by session) of the tabular plug-in of the same recursion,
  per (step, state) cell; over 8 seeds the z-scores of this implementation had a standard deviation
  of 1.0 and the largest of the 33 cells of a seed reached 3.7;
- the logging policy's FQE against the mean return: 1 standard error of that mean (it estimates the
  same quantity from the same data; over 16 seeds the difference stayed below 0.5 of it).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from livegate.datasets.errors import InputError
from livegate.ope import sequential_models
from livegate.ope.sequential_models import FQEFit, fit_fqe, fit_state_ratios, session_folds

N_STATES, N_ACTIONS, HORIZON = 3, 3, 12
N_SESSIONS = 6000


# =================================================================================================
# the MDP, its exact solution and its data

def make_mdp() -> dict:
    rng = np.random.default_rng(2024)
    return dict(P=rng.dirichlet(np.ones(N_STATES) * 2, size=(N_STATES, N_ACTIONS)),   # P[s, a, s']
                R=rng.uniform(0, 2, size=(N_STATES, N_ACTIONS)),                       # mean reward
                end=rng.uniform(0.1, 0.35, size=(N_STATES, N_ACTIONS)),                # P(session ends | s, a)
                mu=rng.dirichlet(np.ones(N_ACTIONS) * 4, size=N_STATES),               # logging policy
                pi=rng.dirichlet(np.ones(N_ACTIONS) * 1.5, size=N_STATES),             # candidate
                d0=np.array([0.5, 0.3, 0.2]))


MDP = make_mdp()


def exact_q(policy: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Q_t(s, a) (HORIZON, S, A) and V_t(s) (HORIZON + 1, S) by backward induction."""
    q, v = np.zeros((HORIZON, N_STATES, N_ACTIONS)), np.zeros((HORIZON + 1, N_STATES))
    for t in range(HORIZON - 1, -1, -1):
        cont = 0.0 if t == HORIZON - 1 else 1.0
        q[t] = MDP["R"] + gamma * cont * (1 - MDP["end"]) * (MDP["P"] @ v[t + 1])
        v[t] = np.sum(policy * q[t], axis=1)
    return q, v


def exact_value(policy: np.ndarray, gamma: float) -> float:
    return float(MDP["d0"] @ exact_q(policy, gamma)[1][0])


def exact_ratios(policy: np.ndarray) -> np.ndarray:
    """w_t(s) = d^pi_t(s) / d^mu_t(s), (HORIZON, S), from the forward recursion of the sub-probabilities."""
    d_pi, d_mu, out = MDP["d0"].copy(), MDP["d0"].copy(), []
    for _ in range(HORIZON):
        out.append(d_pi / d_mu)
        d_pi = np.einsum("s,sa,sa,sat->t", d_pi, policy, 1 - MDP["end"], MDP["P"])
        d_mu = np.einsum("s,sa,sa,sat->t", d_mu, MDP["mu"], 1 - MDP["end"], MDP["P"])
    return np.array(out)


def simulate(n_sessions: int, seed: int) -> dict:
    """Sessions under the logging policy, rows sorted by (session, step), in the inputs' format."""
    rng = np.random.default_rng(seed)
    state = rng.choice(N_STATES, size=n_sessions, p=MDP["d0"])
    alive = np.arange(n_sessions)
    cols: dict[str, list] = {k: [] for k in ("session", "step", "state", "action", "reward")}
    for t in range(HORIZON):
        s = state[alive]
        a = np.argmax(MDP["mu"][s].cumsum(1) > rng.random(len(s))[:, None], axis=1)
        r = MDP["R"][s, a] + rng.normal(0, 1, len(s))
        for key, values in zip(cols, (alive, np.full(len(s), t), s, a, r)):
            cols[key].append(values)
        state[alive] = np.argmax(MDP["P"][s, a].cumsum(1) > rng.random(len(s))[:, None], axis=1)
        alive = alive[rng.random(len(s)) >= MDP["end"][s, a]]
    d = {k: np.concatenate(v) for k, v in cols.items()}
    order = np.lexsort((d["step"], d["session"]))
    d = {k: v[order].astype(np.int64) if k != "reward" else v[order] for k, v in d.items()}
    n, session = len(order), d["session"]
    d["next_row"] = np.where(np.r_[session[1:] == session[:-1], False], np.arange(1, n + 1), -1)
    d["features"] = pd.DataFrame({"state": pd.Categorical([f"s{x}" for x in d["state"]])})
    d["ratio"] = MDP["pi"][d["state"], d["action"]] / MDP["mu"][d["state"], d["action"]]
    d["pi_pairs"] = (np.repeat(np.arange(n), N_ACTIONS), np.tile(np.arange(N_ACTIONS), n),
                     MDP["pi"][d["state"]].ravel())
    d["logging_pairs"] = (np.arange(n), d["action"], np.ones(n))
    return d


def efficient_se(d: dict, gamma: float) -> float:
    """Standard error of the efficient influence function of the candidate's value, exact nuisances:
    psi = V_0(s_0) + sum_t gamma^t w_t(s_t) rho_t (r_t + gamma V_{t+1}(s_{t+1}) - Q_t(s_t, a_t))."""
    q, v = exact_q(MDP["pi"], gamma)
    w = exact_ratios(MDP["pi"])
    s, a, t, nxt = d["state"], d["action"], d["step"], d["next_row"]
    v_next = np.where(nxt >= 0, v[np.minimum(t + 1, HORIZON), s[np.maximum(nxt, 0)]], 0.0)
    terms = gamma ** t * w[t, s] * d["ratio"] * (d["reward"] + gamma * v_next - q[t, s, a])
    psi = np.bincount(d["session"], weights=terms) + v[0, s[t == 0]]
    return float(psi.std(ddof=1) / np.sqrt(len(psi)))


def plugin_ratios(d: dict, session_weight: np.ndarray) -> np.ndarray:
    """The tabular plug-in of w_{t+1}(s') = E[w_t(s_t) rho_t | s_{t+1} = s'] with session weights."""
    s, t, ratio, weight = d["state"], d["step"], d["ratio"], session_weight[d["session"]]
    out = np.ones((HORIZON, N_STATES))
    for k in range(1, HORIZON):
        rows = np.flatnonzero(t == k)
        num = np.bincount(s[rows], weights=weight[rows] * out[k - 1, s[rows - 1]] * ratio[rows - 1], minlength=N_STATES)
        den = np.bincount(s[rows], weights=weight[rows], minlength=N_STATES)
        out[k] = num / np.maximum(den, 1e-300)
    return out


def bootstrap_se(d: dict, reps: int = 200) -> np.ndarray:
    rng = np.random.default_rng(0)
    n_sessions = int(d["session"].max()) + 1
    return np.std([plugin_ratios(d, rng.poisson(1.0, n_sessions).astype(float)) for _ in range(reps)], axis=0, ddof=1)


def per_cell(values: np.ndarray, d: dict) -> np.ndarray:
    """Mean of a per-row array in every (step, state) cell."""
    cell = d["step"] * N_STATES + d["state"]
    sums = np.bincount(cell, weights=values, minlength=HORIZON * N_STATES)
    return (sums / np.maximum(np.bincount(cell, minlength=HORIZON * N_STATES), 1)).reshape(HORIZON, N_STATES)


def initial_value(fit: FQEFit, d: dict) -> float:
    return float(fit.v[d["step"] == 0].mean())


def run_fqe(d: dict, policies=("pi", "logging"), **kwargs) -> dict[str, FQEFit]:
    pairs = {name: d[f"{name}_pairs"] for name in policies}
    return fit_fqe(d["features"], d["action"], N_ACTIONS, d["reward"], d["session"], d["step"], d["next_row"],
                   pairs, **kwargs)


def run_ratios(d: dict, **kwargs) -> np.ndarray:
    return fit_state_ratios(d["features"], d["session"], d["step"], d["next_row"], {"pi": d["ratio"]}, **kwargs)["pi"]


@pytest.fixture(scope="module")
def data() -> dict:
    return simulate(N_SESSIONS, seed=7)


@pytest.fixture(scope="module")
def fqe(data) -> dict[str, FQEFit]:
    return run_fqe(data, gamma=1.0, seed=0)


# =================================================================================================
# fitted-Q evaluation

def test_fqe_value_matches_the_exact_value(data, fqe):
    truth, se = exact_value(MDP["pi"], 1.0), efficient_se(data, 1.0)
    estimate = initial_value(fqe["pi"], data)
    assert abs(estimate - truth) <= 4 * se, f"FQE {estimate:.4f}, exact {truth:.4f}, 4 SE = {4 * se:.4f}"
    # the candidate is worth clearly more than the logging policy: FQE is not just the logged mean
    assert exact_value(MDP["pi"], 1.0) - exact_value(MDP["mu"], 1.0) > 10 * se


def test_fqe_of_the_logging_policy_reproduces_the_on_policy_value(data, fqe):
    returns = np.bincount(data["session"], weights=data["reward"])
    se = returns.std(ddof=1) / np.sqrt(len(returns))
    estimate = initial_value(fqe["logging"], data)
    assert abs(estimate - returns.mean()) <= se, f"FQE {estimate:.4f}, mean return {returns.mean():.4f}, SE {se:.4f}"
    # V is Q at the logged action when the policy is the logged action
    np.testing.assert_allclose(fqe["logging"].v, fqe["logging"].q_logged)


def test_fqe_outputs_are_finite_and_quality_is_reported(data, fqe):
    for fit in fqe.values():
        assert fit.q_logged.shape == fit.v.shape == (len(data["reward"]),)
        assert np.all(np.isfinite(fit.q_logged)) and np.all(np.isfinite(fit.v))
        quality = fit.quality
        assert quality["r2"] > quality["r2_constant"] + 0.05, quality
        assert quality["r2_constant"] <= 0.0 and quality["n_folds"] == 3
        assert quality["tail_start_step"] == HORIZON and quality["tail_sweeps"] == [0, 0, 0]   # every step >= 500 rows


def test_fqe_with_discount_and_a_pooled_tail(data):
    """gamma < 1 and the sparse-step pooling: with min_step_rows = 2500 the steps from 4 on form the tail."""
    fits = run_fqe(data, policies=("pi",), gamma=0.9, seed=1, min_step_rows=2500)
    counts = np.bincount(data["step"])
    first_sparse = int(np.flatnonzero(counts < 2500)[0])
    quality = fits["pi"].quality
    assert quality["tail_start_step"] == first_sparse and quality["tail_steps"] == HORIZON - first_sparse
    assert all(1 <= s <= HORIZON - first_sparse for s in quality["tail_sweeps"]), quality
    truth, se = exact_value(MDP["pi"], 0.9), efficient_se(data, 0.9)
    estimate = initial_value(fits["pi"], data)
    assert abs(estimate - truth) <= 5 * se, f"FQE {estimate:.4f}, exact {truth:.4f}, 5 SE = {5 * se:.4f}"


def test_fqe_is_out_of_fold_and_deterministic():
    """Changing the rewards of fold 0's sessions leaves fold 0's predictions exactly as they were."""
    d = simulate(1500, seed=3)
    first = run_fqe(d, seed=5, min_step_rows=100)
    again = run_fqe(d, seed=5, min_step_rows=100)
    for name in first:
        np.testing.assert_array_equal(first[name].v, again[name].v)
        np.testing.assert_array_equal(first[name].q_logged, again[name].q_logged)
    in_fold_0 = session_folds(d["session"], 3, 5) == 0
    changed = dict(d, reward=np.where(in_fold_0, d["reward"] + 5.0, d["reward"]))
    other = run_fqe(changed, seed=5, min_step_rows=100)
    for name in first:
        np.testing.assert_array_equal(other[name].v[in_fold_0], first[name].v[in_fold_0])
        np.testing.assert_array_equal(other[name].q_logged[in_fold_0], first[name].q_logged[in_fold_0])
        assert np.all(other[name].v[~in_fold_0] > first[name].v[~in_fold_0] + 1.0)


def test_fqe_per_step_without_pooling_and_the_pooling_reported(data, fqe):
    """pool_rows = 0 fits every step on its own rows; by default every step of this data (< POOL_ROWS rows) is
    fitted with the later steps' rows, from step 0 on, and the quality says so."""
    assert np.bincount(data["step"]).max() < sequential_models.POOL_ROWS
    assert fqe["pi"].quality["pool_rows"] == sequential_models.POOL_ROWS
    assert fqe["pi"].quality["pooled_from_step"] == 0
    per_step = run_fqe(data, policies=("pi",), pool_rows=0)
    assert per_step["pi"].quality["pooled_from_step"] is None
    truth, se = exact_value(MDP["pi"], 1.0), efficient_se(data, 1.0)
    estimate = initial_value(per_step["pi"], data)
    assert abs(estimate - truth) <= 4 * se, f"FQE {estimate:.4f}, exact {truth:.4f}, 4 SE = {4 * se:.4f}"


@pytest.mark.parametrize("pool_rows", [0, 4000])
def test_pooled_recursions_only_use_the_steps_already_done(pool_rows):
    """Pooling keeps each recursion exact: FQE (backward) at steps >= 1 does not see the rewards of step 0,
    and the state ratios (forward) at steps <= 2 do not see the importance ratios of the steps from 2 on."""
    d = simulate(3000, seed=9)
    step = d["step"]
    first = run_fqe(d, policies=("pi",), seed=1, pool_rows=pool_rows)["pi"]
    changed = run_fqe(dict(d, reward=np.where(step == 0, d["reward"] + 10.0, d["reward"])), policies=("pi",),
                      seed=1, pool_rows=pool_rows)["pi"]
    np.testing.assert_array_equal(changed.v[step >= 1], first.v[step >= 1])
    assert np.all(changed.q_logged[step == 0] > first.q_logged[step == 0] + 5.0)
    w = run_ratios(d, seed=1, pool_rows=pool_rows)
    w_changed = run_ratios(dict(d, ratio=np.where(step >= 2, d["ratio"] * 2.0, d["ratio"])), seed=1,
                           pool_rows=pool_rows)
    np.testing.assert_array_equal(w_changed[step <= 2], w[step <= 2])
    assert not np.array_equal(w_changed[step == 3], w[step == 3])


def test_the_same_models_with_one_and_with_two_openmp_threads(monkeypatch):
    """Every fit and prediction on the caller's threads (the serial thresholds set to 0): one OpenMP thread and
    two give the same digits, so documents do not depend on the machine's thread count."""
    from threadpoolctl import threadpool_limits

    monkeypatch.setattr(sequential_models, "SERIAL_ROWS", 0)
    monkeypatch.setattr(sequential_models, "SERIAL_FIT_ROWS", 0)
    d = simulate(3000, seed=12)
    out = []
    for threads in (1, 2):
        with threadpool_limits(limits=threads, user_api="openmp"):
            fit = run_fqe(d, policies=("pi",), seed=3, pool_rows=4000)["pi"]
            out.append((fit.v, fit.q_logged, run_ratios(d, seed=3, pool_rows=4000)))
    for one, two in zip(*out):
        np.testing.assert_array_equal(one, two)


def test_fqe_with_the_exact_expectation_and_a_user_model(data):
    from sklearn.tree import DecisionTreeRegressor

    truth, se = exact_value(MDP["pi"], 1.0), efficient_se(data, 1.0)
    exact_targets = run_fqe(data, policies=("pi",), next_action="expectation")
    assert abs(initial_value(exact_targets["pi"], data) - truth) <= 4 * se
    tree = run_fqe(data, policies=("pi",), model=DecisionTreeRegressor(min_samples_leaf=20))
    assert abs(initial_value(tree["pi"], data) - truth) <= 4 * se


def test_fqe_with_action_features_and_an_unlogged_action():
    """Stream features join by action code; a candidate may put mass on a code no logged row shows."""
    d = simulate(1500, seed=4)
    n = len(d["reward"])
    row, action, prob = d["pi_pairs"]
    unseen = (np.arange(n), np.full(n, N_ACTIONS), np.full(n, 0.1))   # code 3: never logged
    pairs = (np.concatenate([row, unseen[0]]), np.concatenate([action, unseen[1]]),
             np.concatenate([prob * 0.9, unseen[2]]))
    features = pd.DataFrame({"category": pd.Categorical(["a", "b", "a"]), "popularity": [0.1, 0.5, 0.9]})
    fits = fit_fqe(d["features"], d["action"], N_ACTIONS, d["reward"], d["session"], d["step"], d["next_row"],
                   {"pi": pairs}, action_features=features)
    assert np.all(np.isfinite(fits["pi"].v))


def test_a_state_column_missing_at_late_steps():
    """A context column logged only at the first steps has no value in the late steps' blocks."""
    d = simulate(1500, seed=8)
    features = d["features"].assign(extra=np.where(d["step"] < 3, d["reward"], np.nan))
    for pool_rows in (0, 1000):
        fits = fit_fqe(features, d["action"], N_ACTIONS, d["reward"], d["session"], d["step"], d["next_row"],
                       {"pi": d["pi_pairs"]}, min_step_rows=100, pool_rows=pool_rows)
        w = fit_state_ratios(features, d["session"], d["step"], d["next_row"], {"pi": d["ratio"]},
                             pool_rows=pool_rows)["pi"]
        assert np.all(np.isfinite(fits["pi"].v)) and np.all(np.isfinite(w))


# =================================================================================================
# state density ratios

def _check_ratios(w: np.ndarray, d: dict) -> None:
    exact, se = exact_ratios(MDP["pi"]), bootstrap_se(d)
    np.testing.assert_array_equal(w[d["step"] == 0], 1.0)
    estimate = per_cell(w, d)
    for t in range(1, HORIZON):
        for s in range(N_STATES):
            assert abs(estimate[t, s] - exact[t, s]) <= 4 * se[t, s], \
                f"step {t}, state {s}: w^ {estimate[t, s]:.4f}, exact {exact[t, s]:.4f}, 4 SE = {4 * se[t, s]:.4f}"


def test_state_ratios_match_the_exact_ratios(data):
    """With the defaults every step of this data (< POOL_ROWS rows each) is pooled with the earlier ones."""
    assert np.bincount(data["step"]).max() < sequential_models.POOL_ROWS
    w = run_ratios(data, seed=0)
    _check_ratios(w, data)
    # the ratios are not trivially 1: the candidate visits the states differently
    assert np.max(np.abs(exact_ratios(MDP["pi"]) - 1)) > 0.2


@pytest.mark.parametrize("pool_rows", [0, 2500])
def test_state_ratios_per_step_and_pooled_from_a_given_size(data, pool_rows):
    """pool_rows = 0: one model per step; 2500: steps 1-3 alone (more rows), the later ones pooled."""
    _check_ratios(run_ratios(data, seed=1, pool_rows=pool_rows), data)


def test_state_ratios_of_the_logging_policy_are_ones_without_fitting(data, monkeypatch):
    def no_fit(*_args, **_kwargs):
        raise AssertionError("fitted a model for the logging policy")

    monkeypatch.setattr(sequential_models._Models, "fit", no_fit)
    out = fit_state_ratios(data["features"], data["session"], data["step"], data["next_row"],
                           {"logging": np.ones(len(data["reward"]))})
    np.testing.assert_array_equal(out["logging"], 1.0)


def test_state_ratios_are_out_of_fold_and_deterministic():
    d = simulate(1500, seed=6)
    first, again = run_ratios(d, seed=2), run_ratios(d, seed=2)
    np.testing.assert_array_equal(first, again)
    in_fold_0 = session_folds(d["session"], 3, 2) == 0
    changed = dict(d, ratio=np.where(in_fold_0, d["ratio"] * 3.0, d["ratio"]))
    np.testing.assert_array_equal(run_ratios(changed, seed=2)[in_fold_0], first[in_fold_0])


# =================================================================================================
# invalid inputs

def _small() -> dict:
    return simulate(40, seed=1)


def _call_fqe(d, **overrides):
    args = dict(features=d["features"], action_code=d["action"], n_actions=N_ACTIONS, reward=d["reward"],
                session=d["session"], step=d["step"], next_row=d["next_row"], policies={"pi": d["pi_pairs"]})
    args.update(overrides)
    return fit_fqe(**args)


@pytest.mark.parametrize("overrides, message", [
    (dict(n_folds=5), "5 cross-fitting folds"),
    (dict(gamma=0.0), "gamma = 0.0 is not in (0, 1]"),
    (dict(gamma=1.5), "gamma = 1.5 is not in (0, 1]"),
    (dict(n_folds=1), "at least 2 folds"),
    (dict(next_action="greedy"), "next_action = 'greedy'"),
    (dict(action_code=np.zeros(3, dtype=np.int64)), "action_code has shape (3,)"),
])
def test_invalid_arguments(overrides, message):
    d = simulate(4, seed=1)
    with pytest.raises(InputError) as exc:
        _call_fqe(d, **overrides)
    assert message in str(exc.value)


def test_fewer_sessions_than_folds():
    d = simulate(2, seed=1)
    with pytest.raises(InputError, match="2 sessions for 3 cross-fitting folds: every fold needs at least one session"):
        _call_fqe(d)
    with pytest.raises(InputError, match="2 sessions for 3 cross-fitting folds"):
        fit_state_ratios(d["features"], d["session"], d["step"], d["next_row"], {"pi": d["ratio"]})


def test_bad_session_structure():
    d = _small()
    later = np.flatnonzero(d["step"] > 0)[0]
    step = d["step"].copy()
    step[later] += 1
    with pytest.raises(InputError, match=rf"rows have a step out of sequence \(first: session {d['session'][later]} "
                                         rf"has step 2 after step 0 at row {later}\)"):
        _call_fqe(d, step=step)
    next_row = d["next_row"].copy()
    next_row[np.flatnonzero(next_row >= 0)[:2]] = -1
    with pytest.raises(InputError, match="2 rows have a wrong next row"):
        _call_fqe(d, next_row=next_row)
    with pytest.raises(InputError, match="session must number the sessions"):
        _call_fqe(d, session=d["session"][::-1].copy())


def test_bad_policy_and_ratio_inputs():
    d = _small()
    row, action, prob = d["pi_pairs"]
    with pytest.raises(InputError, match="policy 'pi': .* do not sum to 1"):
        _call_fqe(d, policies={"pi": (row, action, prob * 0.5)})
    with pytest.raises(InputError, match="policy 'pi': .*negative probability"):
        _call_fqe(d, policies={"pi": (row, action, -prob)})
    with pytest.raises(InputError, match="row index outside"):
        _call_fqe(d, policies={"pi": (row + len(d["reward"]), action, prob)})
    with pytest.raises(InputError, match="logged action code outside 0..2"):
        _call_fqe(d, action_code=d["action"] + 1)
    with pytest.raises(InputError, match="policy 'pi': 1 row has a missing, infinite or negative importance ratio"):
        ratio = d["ratio"].copy()
        ratio[0] = np.nan
        fit_state_ratios(d["features"], d["session"], d["step"], d["next_row"], {"pi": ratio})


def test_classifier_model_is_refused():
    from sklearn.tree import DecisionTreeClassifier

    with pytest.raises(InputError, match="DecisionTreeClassifier is a classifier.*pass a scikit-learn regressor"):
        _call_fqe(_small(), model=DecisionTreeClassifier())


# =================================================================================================
# over seeds

@pytest.mark.statistical
def test_fqe_and_ratios_unbiased_over_seeds():
    """Over 20 fresh data sets: the mean error of FQE's value and of every (step, state) ratio lies within
    4 standard errors of that mean (across-seed sd / sqrt(20))."""
    seeds = 20
    truth, exact = exact_value(MDP["pi"], 1.0), exact_ratios(MDP["pi"])
    value_errors, ratio_errors = [], []
    for seed in range(seeds):
        d = simulate(N_SESSIONS, seed=1000 + seed)
        value_errors.append(initial_value(run_fqe(d, policies=("pi",), seed=seed)["pi"], d) - truth)
        ratio_errors.append(per_cell(run_ratios(d, seed=seed), d) - exact)
    value_errors = np.array(value_errors)
    mean, se = value_errors.mean(), value_errors.std(ddof=1) / np.sqrt(seeds)
    assert abs(mean) <= 4 * se, f"FQE mean error {mean:.4f}, 4 SE = {4 * se:.4f}"
    ratio_errors = np.array(ratio_errors)[:, 1:]
    mean, se = ratio_errors.mean(axis=0), ratio_errors.std(axis=0, ddof=1) / np.sqrt(seeds)
    assert np.all(np.abs(mean) <= 4 * se), f"ratio mean errors / SE:\n{mean / se}"


def test_per_action_models_fall_back_for_rare_and_unseen_actions():
    """Few actions: one model per action; an action with too few rows uses a pooled model, and an action code
    no training row shows (NaN) gets a finite prediction."""
    rng = np.random.default_rng(0)
    n = 3000
    state = rng.normal(size=n)
    action = np.where(rng.random(n) < 0.99, rng.integers(0, 2, n), 2).astype(float)   # action 2: ~30 rows
    y = np.where(action == 0, state, -state) + 0.1 * rng.normal(size=n)
    x = np.column_stack([state, action])
    models = sequential_models._Models(None, [False, True], 0, per_action=(1, np.array([1])))
    fitted = models.fit(x, y)
    assert isinstance(fitted, sequential_models._PerAction)
    assert set(fitted.models) == {0.0, 1.0} and fitted.pooled is not None
    probe = np.column_stack([np.array([1.0, 1.0, 1.0, 1.0]), np.array([0.0, 1.0, 2.0, np.nan])])
    pred = fitted.predict(probe)
    assert np.all(np.isfinite(pred))
    assert pred[0] > 0.5 and pred[1] < -0.5          # the sign flip across actions is kept, not smoothed away
