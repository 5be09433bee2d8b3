"""The single-decision learners: plugin (greedy in a reward model), dr (a softmax policy maximising
the doubly robust value) and poem (counterfactual risk minimisation with variance regularisation)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas is imported by the functions that use it: the policy check runs in every evaluation
    import pandas as pd

from .candidates import Candidates, _logged_entries, _segment_sum, greedy_segments, softmax_segments
from .features import ContextEncoder, RewardModel, action_embedding
from .methods import MethodSpec


@dataclass
class _Design:
    """What the score s(x, a) = beta q_z + x~' W a~ needs for one set of rows."""

    X: np.ndarray           # (n, p) encoded context
    cand: Candidates
    A: np.ndarray           # (M, q) embedding of each candidate's stream
    qz: np.ndarray | None   # (M,) standardised reward-model prediction, or None (poem)

    def scores(self, theta: np.ndarray) -> np.ndarray:
        p, q = self.X.shape[1], self.A.shape[1]
        W = theta[-p * q:].reshape(p, q)
        s = np.einsum("mq,mq->m", (self.X @ W)[self.cand.row], self.A)
        return s + theta[0] * self.qz if self.qz is not None else s

    def gradient(self, g: np.ndarray) -> np.ndarray:
        """d objective / d theta from d objective / d s (one number per candidate): W's gradient is
        X' G with G_i = sum over row i's candidates of g_m a~_m, never the (M, p q) design matrix."""
        G = _segment_sum(g[:, None] * self.A, self.cand.start)
        grad_w = (self.X.T @ G).ravel()
        return np.concatenate([[g @ self.qz], grad_w]) if self.qz is not None else grad_w

    @property
    def n_params(self) -> int:
        return self.X.shape[1] * self.A.shape[1] + (1 if self.qz is not None else 0)


def _fit_lbfgs(objective, n_params: int, iterations: int) -> np.ndarray:
    from scipy.optimize import minimize

    # theta = 0 is the uniform policy over each row's candidates: a neutral, deterministic start
    result = minimize(objective, np.zeros(n_params), jac=True, method="L-BFGS-B",
                      options={"maxiter": max(int(iterations), 1)})
    return result.x


def fit_dr(design: _Design, gamma: np.ndarray, scale: float, l2: float, iterations: int) -> np.ndarray:
    """Maximise the DR value (1/n) sum_i sum_a pi(a|x_i) Gamma_i(a) (Dudik et al. 2011; Athey & Wager
    2021) minus (l2 / 2) |theta|^2; the scores are divided by `scale` so that l2 means the same for
    clicks and for seconds. d value / d s_m = pi_m (Gamma_m - sum_a pi_a Gamma_a) / n."""
    n = design.cand.n_rows
    gz = gamma / scale

    def objective(theta):
        pi = softmax_segments(design.scores(theta), design.cand)
        mean = _segment_sum(pi * gz, design.cand.start)
        value = float(mean.sum()) / n
        g = pi * (gz - mean[design.cand.row]) / n
        return -value + 0.5 * l2 * float(theta @ theta), -design.gradient(g) + l2 * theta

    return _fit_lbfgs(objective, design.n_params, iterations)


def fit_poem(design: _Design, logged_entry: np.ndarray, propensity: np.ndarray, reward: np.ndarray, *,
             lam: float, clip: float, l2: float, iterations: int) -> np.ndarray:
    """POEM (Swaminathan & Joachims 2015, eq. 8): minimise mean(u) + lam sqrt(Var(u) / n) + l2/2 |theta|^2,
    u_i = delta_i min(clip, pi(a_i|x_i) / p_i), with the loss delta = -(r - mean r) / sd(r)
    (BanditNet's translation; Joachims et al. 2018). `logged_entry[i]` is the candidate entry of row i's
    logged stream."""
    n = len(reward)
    sd = float(np.std(reward)) or 1.0
    delta = -(reward - reward.mean()) / sd
    row = design.cand.row

    def objective(theta):
        pi = softmax_segments(design.scores(theta), design.cand)
        pi_logged = pi[logged_entry]
        w = pi_logged / propensity
        clipped = w >= clip
        u = delta * np.minimum(w, clip)
        mean_u = float(u.mean())
        var = float(np.mean((u - mean_u) ** 2))
        value = mean_u + lam * np.sqrt(var / n)
        # d objective / d u_i: 1/n from the mean, (u_i - mean) / (n^1.5 sqrt(Var)) from the penalty
        du = 1.0 / n + (lam * (u - mean_u) / (n ** 1.5 * np.sqrt(var)) if var > 0 else 0.0)
        c = np.where(clipped, 0.0, du * delta / propensity) * pi_logged  # d objective / d log pi(a_i|x_i)
        # d pi(a_i|x_i) / d s_m = pi(a_i) (1[m = a_i] - pi_m) for m in row i
        g = -c[row] * pi
        g[logged_entry] += c
        return value + 0.5 * l2 * float(theta @ theta), design.gradient(g) + l2 * theta

    return _fit_lbfgs(objective, design.n_params, iterations)


@dataclass
class FittedPolicy:
    """A learned policy that scores the candidate streams of any decision with the same context
    columns: `probabilities(context, candidates)` gives its distribution over each row's candidates
    (before the exploration floor and top-k, which `finish` applies)."""

    method: MethodSpec
    reward_model: RewardModel | None
    context_encoder: ContextEncoder | None = None
    embedding: np.ndarray | None = None
    theta: np.ndarray | None = None
    q_mean: float = 0.0
    q_sd: float = 1.0

    def probabilities(self, context: pd.DataFrame, cand: Candidates, q: np.ndarray | None = None) -> np.ndarray:
        name = self.method.name
        if q is None and (name == "plugin" or name == "dr"):
            q = self.reward_model.predict(context, cand)
        if name == "plugin":
            temperature = self.method.get("temperature")
            return greedy_segments(q, cand) if temperature == 0 else softmax_segments(q / temperature, cand)
        design = self.design(context, cand, q)
        return softmax_segments(design.scores(self.theta), cand)

    def design(self, context: pd.DataFrame, cand: Candidates, q: np.ndarray | None) -> _Design:
        n_codes = self.embedding.shape[0] - 1
        A = self.embedding[np.minimum(cand.action, n_codes)]
        qz = (q - self.q_mean) / self.q_sd if self.method.name == "dr" else None
        return _Design(X=self.context_encoder.transform(context), cand=cand, A=A, qz=qz)


def learn(method: MethodSpec, context: pd.DataFrame, action_code: np.ndarray, propensity: np.ndarray,
          reward: np.ndarray, cand: Candidates, n_actions: int, *, action_features: pd.DataFrame | None = None,
          groups: np.ndarray | None = None, seed: int = 0, n_folds: int = 3, reward_model=None,
          q_hat: np.ndarray | None = None, full_model: RewardModel | None = None) -> FittedPolicy:
    """Fit `method` on the training rows (all arguments are of the training rows only).

    `cand` lists each row's candidate streams and must contain the logged one; `groups` are decision
    codes (the positions of a decision share a cross-fitting fold). `q_hat`, one prediction per
    candidate entry, replaces the reward model (e.g. a perfect model in tests); `full_model` is the
    reward model fitted on all these rows, if the caller already has it.
    """
    from livegate.ope.reward_model import fit_reward_model

    logged_entry = _logged_entries(cand, action_code)
    needs_model = method.name in ("plugin", "dr")
    if needs_model and q_hat is None and full_model is None:
        full_model = RewardModel(context, action_code, n_actions, reward, action_features, seed, reward_model)
    if method.name == "plugin":
        return FittedPolicy(method, full_model)
    encoder = ContextEncoder(context)
    embedding = action_embedding(n_actions, action_features)
    fitted = FittedPolicy(method, full_model, encoder, embedding)
    if method.name == "dr":
        if q_hat is None:
            # cross-fitted: each row's scores come from a model that never saw its reward, so the DR
            # correction r - q is not shrunk towards 0 by overfitting (Chernozhukov et al. 2018)
            fit = fit_reward_model(context, action_code, n_actions, reward, {"candidates": (cand.row, cand.action)},
                                   groups, n_folds=n_folds, seed=seed, action_features=action_features,
                                   model=reward_model)
            q_hat = fit.q_policy["candidates"]
        gamma = q_hat.copy()
        gamma[logged_entry] += (reward - q_hat[logged_entry]) / propensity
        fitted.q_mean, fitted.q_sd = float(q_hat.mean()), float(q_hat.std()) or 1.0
        design = fitted.design(context, cand, q_hat)
        fitted.theta = fit_dr(design, gamma, float(np.std(reward)) or 1.0, method.get("l2"), method.get("iterations"))
    else:  # poem
        design = fitted.design(context, cand, None)
        fitted.theta = fit_poem(design, logged_entry, propensity, reward, lam=method.get("lambda"),
                                clip=method.get("clip"), l2=method.get("l2"), iterations=method.get("iterations"))
    return fitted
