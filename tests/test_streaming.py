"""Streamed evaluation (ope/streaming.py) against the in-memory path: the same document, number for
number (1e-12 relative), for every streamable estimator and interval method, whatever the partitioning."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest

from livegate import api
from livegate.datasets.errors import InputError
from livegate.datasets.simulator import SimulationConfig, simulate
from livegate.ope import EvaluationConfig, evaluate
from livegate.ope import inference
from livegate.ope.streaming import UnregisteredContrast, evaluate_stream

RTOL, ATOL = 1e-12, 1e-15
METRICS = ("click", "watch_seconds")
POLICIES = ("better", "logging_replica")


@dataclass(frozen=True)
class _Data:
    logs: object
    policies: dict
    q_hat: dict


def _q_hat(sim, metric: str) -> pd.DataFrame:
    """Predictions for every (row, slate action): the exact expectation times a multiplicative error, so
    that DR and DM have a reward model that is good but not perfect."""
    n_rows, k = sim.slates.shape
    p = sim.config.n_positions
    row = np.repeat(np.arange(n_rows), k)
    noise = np.random.default_rng(7).lognormal(0.0, 0.3, n_rows * k)
    frame = {"decision_id": row // p}
    if p > 1:
        frame["position"] = row % p
    frame.update(action=sim.slates.ravel(), q_hat=sim.expected[metric].ravel() * noise)
    return pd.DataFrame(frame)


@pytest.fixture(scope="module", params=[1, 2], ids=["one-position", "slates"])
def data(request) -> _Data:
    sim = simulate(SimulationConfig(n_rounds=700, n_streams=400, seed=5, n_positions=request.param))
    logs = sim.logs[[c for c in sim.logs.columns if not c.startswith(("x_", "a_"))]]
    return _Data(logs=logs, policies={name: sim.policies[name] for name in POLICIES},
                 q_hat={m: _q_hat(sim, m) for m in METRICS})


@dataclass(frozen=True)
class _Load:
    """A fake partition reader: decision-id ranges of the in-memory frames, through the usual loaders."""

    data: _Data

    def __call__(self, bounds):
        low, high = bounds
        pick = lambda f: f[(f["decision_id"] >= low) & (f["decision_id"] < high)]  # noqa: E731
        d = self.data
        return api.load_inputs(pick(d.logs), {n: pick(p) for n, p in d.policies.items()}, list(METRICS),
                               q_hat={m: pick(q) for m, q in d.q_hat.items()}, context=[])


def _partitions(data: _Data, k: int) -> list[tuple[int, int]]:
    ids = np.unique(data.logs["decision_id"])
    cuts = np.linspace(0, len(ids), k + 1).astype(int)
    edges = [int(ids[c]) if c < len(ids) else int(ids[-1]) + 1 for c in cuts]
    return list(zip(edges[:-1], edges[1:]))


def _both(data: _Data, config: EvaluationConfig, k: int, **kwargs):
    inputs = api.load_inputs(data.logs, data.policies, list(METRICS), q_hat=data.q_hat, context=[])
    memory = evaluate(inputs.logs, inputs.policies, inputs.rewards, config, q_hat=inputs.q_hat)
    # the logs' own warnings lead, as api.evaluate puts them
    memory.warnings = list(dict.fromkeys([*inputs.logs.warnings, *memory.warnings]))
    stream = evaluate_stream(_partitions(data, k), _Load(data), inputs.rewards, config, **kwargs)
    return memory, stream


def _same(a, b, where: str = "", atol: float = ATOL) -> None:
    """Equal documents: numbers to RTOL (NaN equals NaN), everything else exactly. A paired difference
    of two values near each other carries their rounding (1e-16 of the values) in its own units:
    `atol`, RTOL times the values' scale, allows that much and no more."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and list(a) == list(b), f"{where}: keys {list(a)} != {b}"
        for key in a:
            _same(a[key], b[key], f"{where}.{key}", atol)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: lengths {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _same(x, y, f"{where}[{i}]", atol)
    elif isinstance(a, float) or isinstance(b, float):
        if a is None or b is None:
            assert a is b, f"{where}: {a} != {b}"
        elif math.isnan(a) or math.isnan(b):
            assert math.isnan(a) and math.isnan(b), f"{where}: {a} != {b}"
        elif math.isinf(a) or math.isinf(b):
            assert a == b, f"{where}: {a} != {b}"
        else:
            assert abs(a - b) <= RTOL * max(abs(a), abs(b)) + atol, f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def _documents(memory, stream) -> tuple[dict, dict]:
    a, b = memory.to_dict(), stream.to_dict()
    engine = b["data"].pop("engine")
    assert engine["partitions"] >= 1 and engine["passes"] >= 2
    return a, b


def _same_documents(a: dict, b: dict) -> None:
    """Per metric, to RTOL relative to the metric's scale (its largest estimate); the rest to RTOL."""
    for metric in a["metrics"]:
        values = [abs(e["value"]) for p in a["metrics"][metric]["policies"].values() for e in p["estimates"].values()
                  if e["value"] is not None and math.isfinite(e["value"])]
        _same(a["metrics"][metric], b["metrics"][metric], metric, atol=RTOL * max(values, default=0.0) + ATOL)
    scale = RTOL * max(abs(e["value"]) for m in a["metrics"].values() for p in m["policies"].values()
                       for e in p["estimates"].values())
    _same(a["time_windows"], b["time_windows"], "time_windows", atol=scale + ATOL)
    rest = lambda d: {k: v for k, v in d.items() if k not in ("metrics", "policies", "time_windows")}  # noqa: E731
    _same(rest(a), rest(b))


ALL = ("ips", "ips:clip=20", "snips", "dm", "dr", "sndr", "switch-dr:tau=20", "dr-os:lambda=50")
PLAIN = ("ips", "ips:clip=20", "dm", "dr", "switch-dr:tau=20", "dr-os:lambda=50")


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("ci", ["robust", "normal"])
def test_streaming_equals_in_memory(data, ci, k):
    memory, stream = _both(data, EvaluationConfig(estimators=ALL, ci=ci), k)
    a, b = _documents(memory, stream)
    assert a["time_windows"] and len(a["time_windows"]["windows"]) > 3  # the week's days
    _same_documents(a, b)


@pytest.mark.parametrize("k", [3])
def test_streaming_bernstein_equals_in_memory(data, k):
    config = EvaluationConfig(estimators=PLAIN, ci="bernstein", reward_ranges={"watch_seconds": (0.0, 1e5)},
                              max_weight=1e4)
    memory, stream = _both(data, config, k)
    _same_documents(*_documents(memory, stream))
    # click has no configured range but is 0/1: its bounds come from [0, 1]; without max_weight the
    # observed range is used, which the stream reads in pass 1
    memory, stream = _both(data, EvaluationConfig(estimators=("ips", "dr"), ci="bernstein"), k)
    a, b = _documents(memory, stream)
    assert "bernstein-observed-range" in str(a)
    _same_documents(a, b)


@pytest.mark.parametrize("k", [1, 7])
def test_streaming_bootstrap_draws_the_same_resamples(data, k):
    config = EvaluationConfig(estimators=("ips", "snips", "dr", "sndr"), ci="bootstrap", n_boot=200, seed=11)
    memory, stream = _both(data, config, k)
    _same_documents(*_documents(memory, stream))
    for metric in METRICS:
        np.testing.assert_allclose(stream.engines[metric].replicates, memory.engines[metric].replicates,
                                   rtol=RTOL, atol=ATOL)


def test_bootstrap_counts_are_a_function_of_seed_key_and_resample():
    keys = inference.bootstrap_keys(np.arange(1000))
    whole = inference.keyed_poisson_counts(keys, 5, 0, 40)
    # any window of resamples and any subset of units draws the same counts
    np.testing.assert_array_equal(inference.keyed_poisson_counts(keys[300:310], 5, 13, 9), whole[13:22, 300:310])
    assert not np.array_equal(inference.keyed_poisson_counts(keys, 6, 0, 40), whole)
    # one decision's rows share a key and so their counts
    ids = np.repeat(np.arange(500), 2)
    counts = inference.keyed_poisson_counts(inference.bootstrap_keys(ids), 5, 0, 40)
    np.testing.assert_array_equal(counts[:, ::2], counts[:, 1::2])


def test_partition_order_does_not_matter_beyond_rounding(data):
    config = EvaluationConfig(estimators=("ips", "snips", "dr"), ci="robust")
    inputs = api.load_inputs(data.logs, data.policies, list(METRICS), q_hat=data.q_hat, context=[])
    parts = _partitions(data, 5)
    forward = evaluate_stream(parts, _Load(data), inputs.rewards, config).to_dict()
    backward = evaluate_stream(parts[::-1], _Load(data), inputs.rewards, config).to_dict()
    again = evaluate_stream(parts, _Load(data), inputs.rewards, config).to_dict()
    assert forward == again  # merged in partition order: bit-identical
    forward["data"].pop("engine"), backward["data"].pop("engine")
    _same_documents(forward, backward)


def test_extra_contrasts_get_their_tail_shapes_and_others_are_refused(data):
    config = EvaluationConfig(estimators=("ips", "dr"), ci="robust")
    relative = [1.0, -(1.0 + 0.02)]
    keys = [("better", "dr"), ("logging", "dr")]
    inputs = api.load_inputs(data.logs, data.policies, list(METRICS), q_hat=data.q_hat, context=[])
    memory = evaluate(inputs.logs, inputs.policies, inputs.rewards, config, q_hat=inputs.q_hat)
    seen = []

    def register(result):
        seen.append(result.estimate("logging", "dr")["value"])
        return [("click", keys, relative)]

    stream = evaluate_stream(_partitions(data, 3), _Load(data), inputs.rewards, config, extra_contrasts=register)
    assert seen and abs(seen[0] - memory.estimate("logging", "dr")["value"]) <= 1e-12 * abs(seen[0])
    for alpha in (0.05, 0.01):
        _same(memory.engines["click"].interval(keys, relative, alpha).to_dict(),
              stream.engines["click"].interval(keys, relative, alpha).to_dict())
    _same(memory.engines["click"].p_value(keys, relative, 0.0), stream.engines["click"].p_value(keys, relative, 0.0))
    with pytest.raises(UnregisteredContrast, match="extra_contrasts"):
        stream.engines["click"].interval(keys, [1.0, -1.5], 0.05)
    with pytest.raises(UnregisteredContrast):
        stream.engines["watch_seconds"].p_value(keys, relative, 0.0)


@pytest.mark.parametrize("estimators, level, match", [
    (("mips",), "decision", "mips"),
    (("auto",), "decision", "auto"),
    (("dr:model=constant",), "decision", "constant"),
    (("pm-ips",), "decision", "pm-ips"),
    (("wdr",), "session", "session"),
])
def test_unstreamable_estimators_are_refused(data, estimators, level, match):
    config = EvaluationConfig(estimators=estimators, level=level)
    with pytest.raises(InputError, match=match) as info:
        evaluate_stream(_partitions(data, 2), _Load(data), [], config)
    assert "in memory" in str(info.value)


def test_a_reward_model_without_context_columns_is_refused(data):
    """Without predictions DM/DR fit the reward model on a sample; with no context columns to fit it on,
    the stream refuses as the in-memory path does."""
    inputs = api.load_inputs(data.logs, data.policies, list(METRICS), context=[])

    def load(bounds):
        part = _Load(data)(bounds)
        part.q_hat.clear()
        return part

    with pytest.raises(InputError, match="no context columns") as info:
        evaluate_stream(_partitions(data, 2), load, inputs.rewards, EvaluationConfig(estimators=("ips", "dr")))
    assert "--q-hat" in str(info.value)


def test_a_partition_whose_rewards_look_binary_is_recomputed_with_the_whole_logs_range(data):
    """evaluate._reward_range clips q-hat into [0, 1] for a 0/1 reward: a partition whose own rewards are
    all 0/1 guesses so, and when the whole log's are not, it is recomputed unclipped (pass 1 again)."""
    logs = data.logs.copy()
    late = logs["decision_id"] >= logs["decision_id"].median()
    logs["mixed"] = np.where(late, logs["watch_seconds"], logs["click"]).astype(float)
    q = data.q_hat["watch_seconds"]
    mixed = _Data(logs=logs, policies=data.policies, q_hat={"click": data.q_hat["click"], "mixed": q})

    @dataclass(frozen=True)
    class Load(_Load):
        def __call__(self, bounds):
            low, high = bounds
            pick = lambda f: f[(f["decision_id"] >= low) & (f["decision_id"] < high)]  # noqa: E731
            d = self.data
            return api.load_inputs(pick(d.logs), {n: pick(p) for n, p in d.policies.items()}, ["click", "mixed"],
                                   q_hat={m: pick(v) for m, v in d.q_hat.items()}, context=[])

    config = EvaluationConfig(estimators=("dm", "dr"), ci="normal")
    inputs = api.load_inputs(logs, data.policies, ["click", "mixed"], q_hat=mixed.q_hat, context=[])
    memory = evaluate(inputs.logs, inputs.policies, inputs.rewards, config, q_hat=inputs.q_hat)
    memory.warnings = list(dict.fromkeys([*inputs.logs.warnings, *memory.warnings]))
    stream = evaluate_stream(_partitions(mixed, 4), Load(mixed), inputs.rewards, config)
    a, b = memory.to_dict(), stream.to_dict()
    assert b["data"].pop("engine")["passes"] == 3
    _same_documents(a, b)


def _compact(data: _Data, metric: str) -> pd.DataFrame:
    """The logs with the compact form of policy `better`: pi_better, q_hat and qpi_better columns."""
    keys = ["decision_id", "position"] if "position" in data.policies["better"] else ["decision_id"]
    q = data.q_hat[metric]
    policy = data.policies["better"].merge(q, on=[*keys, "action"], how="left")
    logs = data.logs.merge(policy[[*keys, "action", "prob"]], on=[*keys, "action"], how="left")
    logs = logs.merge(q, on=[*keys, "action"], how="left")
    expected = (policy["prob"] * policy["q_hat"]).groupby([policy[k] for k in keys]).sum().rename("qpi_better")
    logs = logs.merge(expected.reset_index(), on=keys, how="left")
    return logs.rename(columns={"prob": "pi_better"}).fillna({"pi_better": 0.0})


@dataclass(frozen=True)
class _LoadCompact:
    logs: object

    def __call__(self, bounds):
        low, high = bounds
        part = self.logs[(self.logs["decision_id"] >= low) & (self.logs["decision_id"] < high)]
        return api.load_inputs(part, {"better": None}, ["watch_seconds"], context=[])


@pytest.mark.parametrize("ci", ["robust", "bootstrap"])
def test_compact_policies_and_predictions_stream(data, ci):
    logs = _compact(data, "watch_seconds")
    config = EvaluationConfig(estimators=("ips", "snips", "dm", "dr"), ci=ci, n_boot=200)
    inputs = api.load_inputs(logs, {"better": None}, ["watch_seconds"], context=[])
    memory = evaluate(inputs.logs, inputs.policies, inputs.rewards, config)
    memory.warnings = list(dict.fromkeys([*inputs.logs.warnings, *memory.warnings]))
    stream = evaluate_stream(_partitions(data, 3), _LoadCompact(logs), inputs.rewards, config)
    a, b = _documents(memory, stream)
    assert a["policies"]["better"]["diagnostics"]["compact_form"]
    _same_documents(a, b)


def _through_pickle(fn, items) -> list:
    """An executor that ships the task and its results as Dask does: pickled."""
    import pickle
    task = pickle.loads(pickle.dumps(fn))
    return [pickle.loads(pickle.dumps(task(pickle.loads(pickle.dumps(item))))) for item in items]


def test_tasks_and_their_results_survive_pickling(data):
    config = EvaluationConfig(estimators=("ips", "snips", "dr"), ci="bootstrap", n_boot=200)
    memory, stream = _both(data, config, 3, execute=_through_pickle)
    _same_documents(*_documents(memory, stream))


# --- DM/DR with a reward model fitted once on a sample of decisions (no q-hat) -------------------

MODELLED = ("dm", "dr", "sndr", "switch-dr:tau=20", "dr-os:lambda=50")


@pytest.fixture(scope="module")
def sim_ctx():
    """Logs with context (x_*) and stream features (a_*), two candidates in long format, no predictions."""
    return simulate(SimulationConfig(n_rounds=1200, n_streams=120, seed=8, n_positions=2))


@dataclass(frozen=True)
class _LoadContext:
    """Decision-id ranges of the simulator's frames, with their context columns and no q-hat."""

    logs: object
    policies: dict
    metrics: tuple = METRICS

    def __call__(self, bounds):
        low, high = bounds
        pick = lambda f: f[(f["decision_id"] >= low) & (f["decision_id"] < high)]  # noqa: E731
        return api.load_inputs(pick(self.logs), {n: pick(p) for n, p in self.policies.items()}, list(self.metrics))


def _context_parts(logs, k: int) -> list[tuple[int, int]]:
    return _partitions(_Data(logs=logs, policies={}, q_hat={}), k)


def _stream_with_model(sim, config, k: int, metrics=METRICS, **kwargs):
    load = _LoadContext(sim.logs, {n: sim.policies[n] for n in POLICIES}, tuple(metrics))
    inputs = api.load_inputs(sim.logs, load.policies, list(metrics))
    return inputs, evaluate_stream(_context_parts(sim.logs, k), load, inputs.rewards, config, **kwargs)


def test_streamed_model_with_every_decision_sampled_is_the_in_memory_evaluation_with_that_model(sim_ctx):
    """The identity: with every decision in the sample, the streamed DM/DR family equals the in-memory
    evaluation that predicts with the same SampledRewardModel (evaluate's shared branch), to 1e-12:
    the partitions' predictions, the clipping into the reward range, the terms and every interval."""
    config = EvaluationConfig(estimators=("ips", *MODELLED), ci="robust", seed=4)
    inputs, stream = _stream_with_model(sim_ctx, config, 3, sample=1.0)
    models = {m: stream.engines[m].reward_model for m in METRICS}
    assert all(model.quality["sample_rows"] == inputs.logs.n for model in models.values())
    memory = evaluate(inputs.logs, inputs.policies, inputs.rewards, config, reward_models=models)
    memory.warnings = list(dict.fromkeys([*inputs.logs.warnings, *memory.warnings]))
    a, b = _documents(memory, stream)
    note = b["warnings"].pop()
    assert note.startswith("The reward model of click, watch_seconds was fitted once on every decision")
    assert a["policies"]["better"]["diagnostics"]["reward_model"]["sampled"] is True
    _same_documents(a, b)


def test_the_sampled_model_and_the_result_do_not_depend_on_the_partitioning(sim_ctx):
    config = EvaluationConfig(estimators=("ips", "dm", "dr"), ci="normal", seed=2)
    runs = {k: _stream_with_model(sim_ctx, config, k, metrics=("watch_seconds",), sample=0.5) for k in (1, 3, 7)}
    inputs, first = runs[1]
    predictions = first.engines["watch_seconds"].reward_model.predict_partition(inputs.logs, inputs.policies)
    a = json.loads(json.dumps(first.to_dict()))
    assert a["data"].pop("engine")["partitions"] == 1
    for k in (3, 7):
        _, other = runs[k]
        q_logged, q_pi = other.engines["watch_seconds"].reward_model.predict_partition(inputs.logs, inputs.policies)
        np.testing.assert_array_equal(q_logged, predictions[0])  # the same model, to the bit
        for name in POLICIES:
            np.testing.assert_array_equal(q_pi[name], predictions[1][name])
        b = json.loads(json.dumps(other.to_dict()))
        engine = b["data"].pop("engine")
        assert engine["partitions"] == k and engine["reward_model"]["sample_rows"] == \
            first.data["engine"]["reward_model"]["sample_rows"]
        _same_documents(a, b)


def test_streamed_dr_with_a_model_on_half_the_decisions_is_within_4_standard_errors_of_the_truth():
    """On the simulator's logs (known policy values, livegate.datasets.simulator), DR with a reward model
    cross-fitted on a sample of half the decisions; one fixed seed (a 4-standard-error tolerance)."""
    sim = simulate(SimulationConfig(n_rounds=4000, n_streams=150, seed=21))
    config = EvaluationConfig(estimators=("dr",), ci="normal", seed=3)
    _, stream = _stream_with_model(sim, config, 4, metrics=("watch_seconds",), sample=0.5)
    assert 0.45 < stream.data["engine"]["reward_model"]["sample_decisions"] / sim.config.n_rounds < 0.55
    for name in ("logging", "better"):
        estimate = stream.estimate(name, "dr")
        truth = sim.truth["policies"][name]["watch_seconds"]
        assert abs(estimate["value"] - truth) < 4 * estimate["se"], (name, estimate, truth)


def test_the_engine_block_records_the_sample(sim_ctx):
    from livegate.ope.reward_model import sample_decisions
    config = EvaluationConfig(estimators=("ips", "dr"), ci="normal", seed=6, n_folds=4)
    inputs, stream = _stream_with_model(sim_ctx, config, 3, metrics=("click",), sample=0.5)
    ids = sim_ctx.logs["decision_id"].to_numpy()
    drawn = sample_decisions(ids, 0.5, seed=6)
    engine = stream.data["engine"]
    assert engine["passes"] == 3  # sampling, 1, 2
    assert engine["reward_model"] == {"sampled": True, "sample_rows": int(drawn.sum()),
                                      "sample_decisions": len(np.unique(ids[drawn])), "fraction": 0.5, "n_folds": 4,
                                      "folds": "seeded hash of decision_id", "metrics": ["click"]}
    quality = stream.to_dict()["policies"]["better"]["diagnostics"]["reward_model"]
    assert quality["sampled"] is True and quality["sample_rows"] == int(drawn.sum()) and quality["n_folds"] == 4
    assert any(w.startswith("The reward model of click was fitted once on a sample of") and "0.5 of them" in w
               for w in stream.warnings)
    # a number of rows to aim at, out of an unknown total: a pass counts the rows first
    _, small = _stream_with_model(sim_ctx, config, 2, metrics=("click",), sample=900)
    assert small.data["engine"]["passes"] == 4
    assert small.data["engine"]["reward_model"]["fraction"] == 900 / len(ids)


def test_with_predictions_given_no_model_is_fitted(data):
    _, with_q_hat = _both(data, EvaluationConfig(estimators=("ips", "dr")), 2)
    assert with_q_hat.data["engine"]["reward_model"] is None and with_q_hat.data["engine"]["passes"] == 2
    assert with_q_hat.to_dict()["policies"]["better"]["diagnostics"]["reward_model"] is None


def test_the_sampled_model_travels_pickled(sim_ctx):
    config = EvaluationConfig(estimators=("dr",), ci="normal")
    _, local = _stream_with_model(sim_ctx, config, 3, metrics=("click",), sample=0.5)
    _, pickled = _stream_with_model(sim_ctx, config, 3, metrics=("click",), sample=0.5, execute=_through_pickle)
    assert local.to_dict() == pickled.to_dict()


def test_api_streams_a_users_reward_model_and_says_what_dm_dr_need(sim_ctx, tmp_path):
    """api.evaluate with --max-memory: a user's scikit-learn model is cross-fitted on the sample; logs without
    decision ids are refused with a clear message; a model that cannot pickle is refused for Dask."""
    from sklearn.linear_model import Ridge
    logs = tmp_path / "logs.parquet"
    frame = sim_ctx.logs[[c for c in sim_ctx.logs.columns if not c.startswith("a_")]]
    frame.to_parquet(logs, row_group_size=600)
    options = dict(rewards=["watch_seconds"], estimators=["ips", "dr"], max_memory="16MiB")
    result = api.evaluate(str(logs), {}, reward_model=Ridge(), **options)
    quality = result.to_dict()["policies"]["logging"]["diagnostics"]["reward_model"]
    assert quality["sampled"] is True and "Ridge" in str(quality.get("model"))
    assert result.data["engine"]["reward_model"]["sample_rows"] == len(frame)
    # the partitions' memory estimate counts the model's feature rows and predictions per (row, stream) pair
    ips_only = api.evaluate(str(logs), {}, **{**options, "estimators": ["ips"]})
    assert result.data["engine"]["plan"]["bytes_per_row_estimate"] > \
        ips_only.data["engine"]["plan"]["bytes_per_row_estimate"] + 400
    no_ids = tmp_path / "no_ids.parquet"
    frame.drop(columns=["decision_id"]).to_parquet(no_ids)
    with pytest.raises(InputError, match="has no decision_id column: a streamed evaluation fits the reward model"):
        api.evaluate(str(no_ids), {}, **options)
    with pytest.raises(InputError, match="reward_model: cannot be pickled"):
        api.evaluate(str(logs), {}, reward_model=_Unpicklable(), scheduler="tcp://127.0.0.1:9", **options)


class _Unpicklable:
    """A model that pickle refuses (a lambda attribute)."""

    def __init__(self):
        self.predict = lambda x: x
