"""A "recommend where it helps" policy learned from the fitted effect model.

EconML's ``SingleTreePolicyInterpreter`` (Athey & Wager 2021, "Policy learning with observational
data", as implemented in EconML) fits a shallow policy tree on the effect modifiers that maximises
the estimated welfare, i.e. recommends where the fitted CATE is positive. The tree is shallow on
purpose: its rules are readable, and it generalises better than thresholding every row's CATE.
Trees built on the CATE's lower confidence bound were measured too (40k simulated rows): they
withheld recommendations from leaves whose effect was positive but uncertain, and lost value
against recommending to everybody under the true effect (-0.20 s per decision, against +0.17 s for
the welfare-maximising tree; the oracle gain was +0.27 s).
The policy is returned in the long policy format of the data contract, one row per decision and
treatment value, so that ``livegate evaluate`` can score it off-policy; the gains in the summary
are model-based and in-sample, and only that evaluation is an honest estimate of its value.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

MAX_DEPTH = 3


def learn_policy(fitted, X: np.ndarray, t: np.ndarray, decision_ids, *, alpha: float, seed: int,
                 apply_to: tuple[np.ndarray, np.ndarray] | None = None):
    """Return ``(policy_frame, summary)``; the summary holds the share recommended and estimated gains.

    ``alpha`` sets the level of the reported share of decisions whose CATE interval lies above zero.
    The tree is learned on the rows ``X`` (with treatments ``t``); ``apply_to = (X_all, ids)`` writes
    the policy for other decisions (e.g. every decision, when trimming dropped some rows from ``X``),
    ``decision_ids`` being then unused. The summary's gains are over the rows ``X``."""
    from econml.cate_interpreter import SingleTreePolicyInterpreter

    n = len(t)
    interpreter = SingleTreePolicyInterpreter(include_model_uncertainty=False, risk_level=None, max_depth=MAX_DEPTH,
                                              min_samples_leaf=max(100, n // 400), random_state=seed)
    interpreter.interpret(fitted, X)
    recommend = np.asarray(interpreter.treat(X)).ravel().astype(np.int64)
    cate = np.asarray(fitted.effect(X, T0=0, T1=1)).ravel()
    lower = np.asarray(fitted.effect_interval(X, T0=0, T1=1, alpha=alpha)[0]).ravel()
    if apply_to is None:
        out, ids = recommend, np.asarray(decision_ids)
    else:
        out, ids = np.asarray(interpreter.treat(apply_to[0])).ravel().astype(np.int64), np.asarray(apply_to[1])
    frame = pd.DataFrame({
        "decision_id": np.repeat(ids, 2),
        "action": np.tile(np.array([0, 1], dtype=np.int64), len(ids)),
        "prob": np.column_stack([1.0 - out, out]).astype(np.float64).ravel(),
    })
    summary = {
        "method": f"EconML SingleTreePolicyInterpreter (depth <= {MAX_DEPTH}, recommend where the fitted CATE "
                  f"is positive)",
        "n_decisions": int(len(ids)),
        "share_recommended": float(recommend.mean()),
        "logged_share_recommended": float(t.mean()),
        "share_effect_surely_positive": float(np.mean(lower > 0)),
        "estimated_gain_vs_logged": float(np.mean((recommend - t) * cate)),
        "estimated_gain_vs_recommend_all": float(np.mean((recommend - 1) * cate)),
        "estimated_gain_vs_recommend_none": float(np.mean(recommend * cate)),
        "note": "gains are in-sample averages of the fitted CATE; score the policy with livegate evaluate "
                "for an off-policy estimate with an interval",
    }
    return frame, summary
