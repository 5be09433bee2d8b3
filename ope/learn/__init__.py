"""Off-policy learning of single-decision policies from the logs: `livegate learn`.

Three learners, each returning a `FittedPolicy` that scores any decision's candidate streams:

* `plugin` (the direct method): a reward model q(x, a) fitted on the training rows, then the greedy
  policy (or a softmax at `temperature`) over its predictions. Its quality is the model's.
* `dr`: a softmax policy pi_theta(a|x) that maximises the doubly robust value estimate
  (1/n) sum_i sum_a pi_theta(a|x_i) Gamma_i(a), with the DR scores
  Gamma_i(a) = q(x_i, a) + 1[a = a_i] (r_i - q(x_i, a_i)) / p_i and a *cross-fitted* q (Dudik,
  Langford & Li 2011, eq. 2; policy learning on DR scores: Athey & Wager 2021, eq. 6).
* `poem`: counterfactual risk minimisation with variance regularisation (Swaminathan & Joachims
  2015, POEM, eq. 8): minimise the clipped IPS risk of the translated loss plus
  lambda * sqrt(Var(u) / n). The loss is shifted by the training rows' mean reward
  (BanditNet, Joachims, Swaminathan & de Rijke 2018), which stops the optimiser from merely moving
  mass to actions the logs rarely show ("propensity overfitting"). It uses no reward model.

`dr` and `poem` share one policy class: a linear softmax over a bilinear score
s(x, a) = beta q_z(x, a) + x~' W a~, with x~ the standardised context (and an intercept) and a~ an
embedding of the stream (its one-hot id for few streams, else its a_* features); `dr` uses the
standardised reward model prediction q_z as a feature, `poem` does not (beta = 0). The gradient of
each objective is computed by segment sums over the candidate rows; L-BFGS fits it.

Every learned policy ends with an exploration floor: pi = (1 - epsilon) pi_learned + epsilon / K
over its K kept candidates (`top_k` keeps the K most probable ones), so its own logs will support
the next round of learning.

For viewer sessions (`fqi`, `pessimistic-fqi`; section at the end): fitted-Q iteration (Ernst, Geurts
& Wehenkel 2005) over the logged steps, and a pessimistic variant with a behaviour-regularised value
penalty (Wu, Tucker & Nachum 2019); the policy is greedy or softmax in the fitted Q.

The candidate streams of a decision are those the user lists (`candidates`, e.g. the streams on air
at that moment) or, without such a list, the streams of the training logs (narrowed by the reward
model to the `prefilter` best when there are many: a policy can only be supported where the logging
policy could have shown the stream).

The training rows are recorded in the policy file (Parquet schema metadata `livegate.learn`): the
split rule and the training decision ids, so that evaluating or gating the policy on rows it was
trained on is refused (`check_not_trained_on`).
"""
from __future__ import annotations

from .candidates import Candidates, finish, greedy_segments, softmax_segments
from .decision import FittedPolicy, fit_dr, fit_poem, learn
from .features import ContextEncoder, RewardModel, TreeEncoder, action_embedding
from .methods import DECISION_METHODS, METHODS, SCHEMA, SESSION_METHODS, MethodSpec, parse_method
from .sessions import BehaviourModel, FQIPolicy, QModel, fit_fqi
from .split import (METADATA_KEY, check_not_trained_on, decode_ids, encode_ids, policy_metadata, split_units,
                    trained_rows, training_record)

__all__ = ["BehaviourModel", "Candidates", "ContextEncoder", "DECISION_METHODS", "FQIPolicy", "FittedPolicy",
           "METADATA_KEY", "METHODS", "MethodSpec", "QModel", "RewardModel", "SCHEMA", "SESSION_METHODS",
           "TreeEncoder", "action_embedding", "check_not_trained_on", "decode_ids", "encode_ids", "finish",
           "fit_dr", "fit_fqi", "fit_poem", "greedy_segments", "learn", "parse_method", "policy_metadata",
           "softmax_segments", "split_units", "trained_rows", "training_record"]
