"""livegate: offline policy evaluation, causal checks and a CI gate for live-stream recommendation.

The short API works on pandas DataFrames, Arrow tables or Parquet paths::

    import livegate
    result = livegate.evaluate(logs, {"new_ranker": policy}, rewards=["watch_seconds"])
    result.to_frame()                       # one tidy row per policy, metric and estimator
    decision = livegate.run_gate("gate.toml")
    decision.exit_code                      # 0 ship, 1 fail, 3 inconclusive
    learned = livegate.learn(logs, "watch_seconds", "dr", candidates=slates)   # trained on 70%, evaluated on 30%
    curves = livegate.replay(logs, "watch_seconds", "eps-greedy:0.1,ucb1")      # livegate.replay/1 document
    tracked = livegate.track("events.parquet", "logs/")                         # raw events -> contract logs
    watch = livegate.monitor("logs/", {"new": "new.parquet"}, "click")          # exit_code 0 / 1 / 3

Submodules: livegate.datasets (contract, loading, validation, simulators), livegate.ope (estimators),
livegate.causal (DoWhy/EconML check), livegate.reports (HTML, Markdown, JUnit), livegate.cli.
"""
import importlib

from .datasets._version import __version__

#: short-API name -> module that defines it; imported on first use, so that `import livegate` (and the
#: CLI's start-up) does not pay for pandas, scikit-learn or DoWhy before they are needed
_API = {name: "api" for name in ("evaluate", "causal_check", "run_gate", "GateDecision", "learn", "replay",
                                  "LearnResult", "track", "monitor")}
_API.update({name: "ope.estimators" for name in ("DM", "IPS", "SNIPS", "DR", "SNDR", "SwitchDR", "DRos")})
_API.update({name: "datasets" for name in ("InputError", "RewardSpec")})

__all__ = ["__version__", *sorted(_API)]


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(f".{_API[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
