"""A gate that is safe by default (issue 13, item 1).

Under the default diagnostics thresholds, the demo's legitimate `better` candidate passes and `worse`
fails, while the scenarios that used to ship do not: one logged propensity of 1e-6 (effective sample
size about 1), a candidate with 98% of its probability where the logging policy never acts, logs
whose propensities are all 1, and propensities off by a factor 2. Each scenario is also run with the
thresholds loosened explicitly, to show that it is the defaults that stop it (and that loosening is
reported). Then: every gate.toml threshold and parameter is validated, a `max_weight` the data break
is an input error, `[rewards]` names may not shadow a column or repeat, and criteria that cannot
block a worse candidate are warned about in every output.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from livegate import cli
from livegate.datasets.demo import GATE_TOML
from livegate.datasets.gate_config import (DEFAULT_MAX_MEAN_WEIGHT_Z, DEFAULT_MAX_UNSUPPORTED_MASS, DEFAULT_MIN_ESS,
                                           DEFAULT_MIN_ESS_SHARE, load_gate_config)
from livegate.datasets.simulator import SimulationConfig, simulate, write_simulation

#: the thresholds as they were before they had safe defaults, written out explicitly
LOOSE = ("[diagnostics]\nmin_ess = 0\nmin_ess_share = 0\nmax_unsupported_mass = 1\n"
         "max_mean_weight_z = 1000\n")
THRESHOLDS_LINE = ("diagnostics thresholds: ESS >= 1,000 and >= 5% of the rows; unsupported mass upper bound <= "
                   "10%; mean weight at most 4 standard errors above 1")


class _Demo:
    """The demo's simulated week (50,000 decisions, seed 0, as `livegate demo` writes it) on disk."""

    def __init__(self, root: Path, sim):
        self.root, self.sim = root, sim

    def pi_logged(self, candidate: str) -> np.ndarray:
        """The candidate's probability of each logged row's action."""
        logs = self.sim.logs[["decision_id", "action"]]
        joined = logs.merge(self.sim.policies[candidate], on=["decision_id", "action"], how="left")
        return joined["prob"].fillna(0.0).to_numpy()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> _Demo:
    root = tmp_path_factory.mktemp("demo-sim")
    sim = simulate(SimulationConfig(n_rounds=50_000, seed=0))
    write_simulation(sim, root)
    return _Demo(root, sim)


def _gate(directory: Path, candidate: str, policy: str | Path, *, logs: str | Path = "logs.parquet",
          criteria: str | None = None, extra: str = "", evaluation: str = 'estimator = "snips"\n',
          name: str = "gate") -> tuple[int, dict, str]:
    """Write a gate.toml gating one candidate on watch_seconds, run `livegate gate`; (exit code, JSON, stdout)."""
    criteria = criteria or '[[criterion]]\nmetric = "watch_seconds"\nrule = "improves"\nmin_effect = 0.0\n'
    config = directory / f"{name}.toml"
    config.write_text(f'[data]\nlogs = "{logs}"\n[evaluation]\n{evaluation}'
                      f'[[candidate]]\nname = "{candidate}"\npolicy = "{policy}"\n' + criteria + extra)
    out = directory / f"{name}.json"
    return _run(config, out)


def _run(config: Path, out: Path, *extra: str) -> tuple[int, dict, str]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = cli.main(["gate", "--config", str(config), "--out", str(out), *extra])
    doc = json.loads(out.read_text()) if out.exists() and code in (0, 1, 3) else {}
    return code, doc, " ".join(buffer.getvalue().split())


def _failures(doc: dict) -> list[str]:
    return doc["candidates"][0]["diagnostics"]["failures"]


# --- the demo under the defaults ----------------------------------------------------------------

def test_demo_gate_keeps_better_passing_and_worse_failing_under_the_defaults(demo, tmp_path):
    """The demo's own gate.toml (without its causal requirement) sets no [diagnostics]: the defaults
    apply, `better` passes, `worse` fails, and `greedy` (99% on one stream, ESS 3.1% of the rows) is
    held back."""
    text = GATE_TOML.format(seed=0).split("[causal]")[0]
    assert "\n[diagnostics]" not in text
    config = demo.root / "demo-gate.toml"
    config.write_text(text)
    code, doc, out = _run(config, tmp_path / "gate.json")
    decisions = {c["name"]: c["decision"] for c in doc["candidates"]}
    assert code == 1 and decisions == {"better": "pass", "worse": "fail", "greedy": "inconclusive"}
    diagnostics = {c["name"]: c["diagnostics"] for c in doc["candidates"]}
    assert diagnostics["better"]["ok"] and diagnostics["worse"]["ok"]
    assert diagnostics["better"]["ess_share"] > 0.15 and diagnostics["worse"]["ess_share"] > DEFAULT_MIN_ESS_SHARE
    assert any("effective sample size 1,551 < 2,500 required" in f for f in diagnostics["greedy"]["failures"])
    # the thresholds in force are recorded and printed with the verdict; nothing was loosened
    thresholds = doc["diagnostics_thresholds"]
    assert thresholds == {**thresholds, "min_ess": DEFAULT_MIN_ESS, "min_ess_share": DEFAULT_MIN_ESS_SHARE,
                          "max_unsupported_mass": DEFAULT_MAX_UNSUPPORTED_MASS, "unsupported_mass_bound": "upper",
                          "max_mean_weight_z": DEFAULT_MAX_MEAN_WEIGHT_Z, "loosened": []}
    assert THRESHOLDS_LINE in out and doc["warnings"] == [] and "WARNING: [" not in out
    assert "unsupported mass upper bound 5.54% (estimate 2.97%)" in out  # better: the bound the gate compared


# --- the scenarios that must not ship -----------------------------------------------------------

def test_one_tiny_propensity_no_longer_makes_worse_pass(demo, tmp_path):
    """(a) One logged propensity set to 1e-6, on a row where `worse` likes the logged stream and the
    viewer watched long: that row carries the whole estimate (ESS about 1) and `worse`, truly 73 s
    worse, looks better than logging."""
    watch = demo.sim.logs["watch_seconds"].to_numpy()
    row = int(np.argmax(np.where(watch > 150, demo.pi_logged("worse"), -1.0)))
    logs = demo.sim.logs.copy()
    logs.loc[row, "propensity"] = 1e-6
    logs.to_parquet(tmp_path / "logs.parquet")
    policy = demo.root / "policies" / "worse.parquet"

    code, doc, _ = _gate(tmp_path, "worse", policy, extra=LOOSE, name="loose")
    assert code == 0, "the scenario no longer ships even with loose thresholds: it tests nothing"
    assert doc["candidates"][0]["diagnostics"]["ess"] < 2

    code, doc, out = _gate(tmp_path, "worse", policy)
    assert code in (1, 3) and doc["candidates"][0]["decision"] != "pass"
    assert any(f.startswith("effective sample size 1.3 < 2,500 required") for f in _failures(doc)), _failures(doc)
    assert "diagnostics: effective sample size 1.3 < 2,500 required" in out


@pytest.mark.parametrize("where", ["off_slate", "unlogged"])
def test_a_candidate_acting_where_logging_never_does_is_held_back(demo, tmp_path, where):
    """(b) 98% of the candidate's probability on streams the logging policy never shows: `off_slate`,
    a stream on air but not in that decision's slate (the logging policy's probability there is 0);
    `unlogged`, streams no logged row shows at all. The remaining 2% follow `better`, and the
    self-normalised estimate renormalises the 98% away: it looks exactly like `better`."""
    logs = demo.sim.logs
    if where == "off_slate":
        slates = demo.sim.slates
        away = np.full(len(slates), -1)
        for k in range(slates.shape[1], -1, -1):  # the smallest stream id not on the slate
            away[~(slates == k).any(axis=1)] = k
        assert (away >= 0).all()
    else:
        assert logs["action"].max() < 10_000
        away = 10_000 + logs["decision_id"].to_numpy() % 7
    better = demo.sim.policies["better"].assign(prob=lambda p: 0.02 * p["prob"])
    elsewhere = pd.DataFrame({"decision_id": logs["decision_id"], "action": away.astype(better["action"].dtype),
                              "prob": 0.98})
    (pd.concat([better, elsewhere]).groupby(["decision_id", "action"], as_index=False)["prob"].sum()
     .to_parquet(tmp_path / "policy.parquet"))
    logs_path = demo.root / "logs.parquet"

    code, doc, _ = _gate(tmp_path, "away", tmp_path / "policy.parquet", logs=logs_path, extra=LOOSE, name="loose")
    assert code == 0, "the scenario no longer ships even with loose thresholds: it tests nothing"

    code, doc, _ = _gate(tmp_path, "away", tmp_path / "policy.parquet", logs=logs_path)
    diagnostics = doc["candidates"][0]["diagnostics"]
    assert code == 3 and doc["candidates"][0]["decision"] == "inconclusive"
    assert diagnostics["unsupported_mass"] == pytest.approx(0.98, abs=0.01)
    assert diagnostics["unsupported_mass_upper"] > DEFAULT_MAX_UNSUPPORTED_MASS
    assert any(f.startswith("unsupported mass upper bound 98") for f in _failures(doc)), _failures(doc)


def test_logs_whose_propensities_are_all_one_are_held_back(demo, tmp_path):
    """(c) Every logged propensity 1 (e.g. the propensity column filled with a default): the weights
    are the candidate's probabilities, their mean is 0.37, and SNIPS reports `better` +88 s better
    than logging (truly +25 s)."""
    demo.sim.logs.assign(propensity=1.0).to_parquet(tmp_path / "logs.parquet")
    policy = demo.root / "policies" / "better.parquet"

    code, doc, _ = _gate(tmp_path, "better", policy, extra=LOOSE, name="loose")
    assert code == 0, "the scenario no longer ships even with loose thresholds: it tests nothing"

    code, doc, _ = _gate(tmp_path, "better", policy)
    diagnostics = doc["candidates"][0]["diagnostics"]
    assert code == 3 and doc["candidates"][0]["decision"] == "inconclusive"
    assert 0.60 < diagnostics["unsupported_mass"] < 0.65 and diagnostics["ess"] > 20_000  # ESS alone would pass
    assert any(f.startswith("unsupported mass upper bound 63") for f in _failures(doc)), _failures(doc)


def test_propensities_too_small_by_half_are_held_back_by_the_mean_weight(demo, tmp_path):
    """Every propensity halved: SNIPS, ESS and the unsupported mass cannot see a constant factor, the
    mean weight (1.94, far above the 1 it can be at most) can."""
    demo.sim.logs.assign(propensity=lambda logs: logs["propensity"] / 2).to_parquet(tmp_path / "logs.parquet")
    policy = demo.root / "policies" / "better.parquet"

    code, doc, _ = _gate(tmp_path, "better", policy, extra=LOOSE, name="loose")
    assert code == 0, "the scenario no longer ships even with loose thresholds: it tests nothing"

    code, doc, _ = _gate(tmp_path, "better", policy)
    assert code == 3 and doc["candidates"][0]["decision"] == "inconclusive"
    assert _failures(doc) == [f for f in _failures(doc) if f.startswith("mean importance weight 1.94")]
    assert len(_failures(doc)) == 1


# --- loosening is explicit and visible ------------------------------------------------------------

def test_thresholds_can_be_loosened_only_explicitly_and_loosening_is_reported(demo, tmp_path):
    logs = demo.root / "logs.parquet"
    code, doc, out = _gate(tmp_path, "better", demo.root / "policies" / "better.parquet", logs=logs, extra=LOOSE)
    assert code == 0
    thresholds = doc["diagnostics_thresholds"]
    assert thresholds["min_ess"] == 0 and thresholds["max_unsupported_mass"] == 1
    assert sorted(thresholds["loosened"]) == sorted(["min_ess", "min_ess_share", "max_unsupported_mass",
                                                     "max_mean_weight_z"])
    assert "(loosened in gate.toml: min_ess, min_ess_share, max_unsupported_mass, max_mean_weight_z)" in out
    assert any(w.startswith("[diagnostics] min_ess = 0 is looser than the default 1000") for w in doc["warnings"])
    assert "WARNING: [diagnostics] max_unsupported_mass = 1 is looser than the default 0.1" in out
    # stricter than the defaults: no warning
    strict = "[diagnostics]\nmin_ess = 5000\nmin_ess_share = 0.1\nmax_unsupported_mass = 0.08\n"
    _, doc, _ = _gate(tmp_path, "better", demo.root / "policies" / "better.parquet", logs=logs, extra=strict,
                      name="strict")
    assert doc["warnings"] == [] and doc["diagnostics_thresholds"]["loosened"] == []
    assert doc["diagnostics_thresholds"]["min_ess"] == 5000 and doc["candidates"][0]["diagnostics"]["ok"]


# --- criteria that cannot block a worse candidate -----------------------------------------------

def test_criteria_that_cannot_block_a_worse_candidate_are_warned_about_everywhere(demo, tmp_path):
    from markupsafe import escape

    criteria = ('[[criterion]]\nmetric = "watch_seconds"\nrule = "improves"\nmin_effect = -1000\n'
                '[[criterion]]\nmetric = "click"\nrule = "non_inferior"\nmargin = 1.0\nrelative = true\n'
                '[[criterion]]\nmetric = "gift_value"\nrule = "non_inferior"\nmargin = 1000\n')
    extra = f'[output]\nreport = "{tmp_path / "r.html"}"\nmarkdown = "{tmp_path / "s.md"}"\n'
    code, doc, out = _gate(tmp_path, "worse", demo.root / "policies" / "worse.parquet", logs=demo.root / "logs.parquet",
                           criteria=criteria, extra=extra)
    assert code == 0 and doc["candidates"][0]["decision"] == "pass"  # worse ships: hence the warnings
    assert len(doc["warnings"]) == 3
    improves, relative, absolute = doc["warnings"]
    assert improves.startswith("[[criterion]] 1 (watch_seconds improves): min_effect = -1000 is negative")
    assert relative.startswith("[[criterion]] 2 (click non_inferior): a relative margin of 100% passes")
    assert absolute.startswith("[[criterion]] 3 (gift_value non_inferior): margin = 1000 is at least the "
                               "baseline's own value")
    assert all("cannot block a worse candidate" in w for w in doc["warnings"])
    html = (tmp_path / "r.html").read_text()
    markdown = (tmp_path / "s.md").read_text()
    for w in doc["warnings"]:
        assert f"WARNING: {w}" in out
        assert str(escape(w)) in html
    assert 'id="d1-gate-warnings"' in html and "min\\_effect = -1000 is negative" in markdown
    assert "Gate warnings:" in markdown


def test_a_sound_configuration_has_no_gate_warnings(demo, tmp_path):
    criteria = ('[[criterion]]\nmetric = "watch_seconds"\nrule = "improves"\nmin_effect = 0.0\n'
                '[[criterion]]\nmetric = "click"\nrule = "non_inferior"\nmargin = 0.05\nrelative = true\n')
    code, doc, out = _gate(tmp_path, "better", demo.root / "policies" / "better.parquet",
                           logs=demo.root / "logs.parquet", criteria=criteria)
    assert code == 0 and doc["warnings"] == [] and "WARNING" not in out


# --- every threshold and parameter validated, before any data is read -------------------------

BASE = ('[data]\nlogs = "logs.parquet"\n[[candidate]]\nname = "better"\npolicy = "better.parquet"\n'
        '[[criterion]]\nmetric = "watch_seconds"\nrule = "improves"\n')


@pytest.mark.parametrize("extra, needle", [
    ("[diagnostics]\nmin_ess = nan\n", "[diagnostics] min_ess = nan is not in [0, infinity) (it must be a finite number)"),
    ("[diagnostics]\nmin_ess = -1\n", "[diagnostics] min_ess = -1 is not in [0, infinity)"),
    ("[diagnostics]\nmin_ess = inf\n", "[diagnostics] min_ess = inf is not in [0, infinity)"),
    ("[diagnostics]\nmin_ess_share = 1.5\n", "[diagnostics] min_ess_share = 1.5 is not in [0, 1]"),
    ("[diagnostics]\nmin_ess_share = nan\n", "[diagnostics] min_ess_share = nan is not in [0, 1]"),
    ("[diagnostics]\nmax_unsupported_mass = -0.1\n", "[diagnostics] max_unsupported_mass = -0.1 is not in [0, 1]"),
    ("[diagnostics]\nmax_unsupported_mass = 1.5\n", "[diagnostics] max_unsupported_mass = 1.5 is not in [0, 1]"),
    ("[diagnostics]\nmax_unsupported_mass = nan\n", "[diagnostics] max_unsupported_mass = nan is not in [0, 1]"),
    ("[diagnostics]\nmax_mean_weight_z = 0\n", "[diagnostics] max_mean_weight_z = 0 is not in (0, infinity)"),
    ("[diagnostics]\nmax_mean_weight_z = nan\n", "[diagnostics] max_mean_weight_z = nan is not in (0, infinity)"),
    ("[diagnostics]\nmin_ess = true\n", "[diagnostics] min_ess = True has the wrong type"),
    ("[evaluation]\nmax_weight = -1\n", "[evaluation] max_weight = -1 is not in [1, infinity)"),
    ("[evaluation]\nmax_weight = nan\n", "[evaluation] max_weight = nan is not in [1, infinity)"),
    ("[evaluation]\nmax_weight = inf\n", "[evaluation] max_weight = inf is not in [1, infinity)"),
    ("[evaluation]\nmax_weight = 0\n", "[evaluation] max_weight = 0 is not in [1, infinity)"),
    ("[evaluation]\nmax_weight = 0.5\n", "[evaluation] max_weight = 0.5 is not in [1, infinity)"),
    ("[evaluation]\nalpha = nan\n", "[evaluation] alpha = nan is not in (0, 1)"),
    ("[evaluation]\nalpha = 0\n", "[evaluation] alpha = 0 is not in (0, 1)"),
    ("[evaluation]\nseed = -1\n", "[evaluation] seed = -1 is not in [0, 2147483647]"),
    ("[evaluation]\nlevel = \"user\"\n", "[evaluation] level = 'user' is unknown"),
    ("[evaluation]\nlevel = \"session\"\ngamma = 0\n", "[evaluation] gamma = 0 is not in (0, 1]"),
    ("[evaluation]\nlevel = \"session\"\ngamma = 1.5\n", "[evaluation] gamma = 1.5 is not in (0, 1]"),
    ("[evaluation]\nlevel = \"session\"\ngamma = nan\n", "[evaluation] gamma = nan is not in (0, 1]"),
    ("[evaluation]\ngamma = 0.9\n", "[evaluation] gamma = 0.9 discounts session returns, but level is \"decision\""),
    ("[reward_range]\nclick = [0, inf]\n", "[reward_range] click = [0, inf] must be [LOW, HIGH], two finite numbers"),
    ("[reward_range]\nclick = [nan, 1]\n", "[reward_range] click = [nan, 1] must be [LOW, HIGH]"),
    ('[[criterion]]\nmetric = "click"\nrule = "non_inferior"\nmargin = 0.05\nmin_effect = 0.01\n',
     "[criterion 2] min_effect is not a setting of rule 'non_inferior' (it would be ignored)"),
    ('[[criterion]]\nmetric = "click"\nrule = "improves"\nmargin = 0.05\n',
     "[criterion 2] margin is not a setting of rule 'improves' (it would be ignored)"),
    ('[[criterion]]\nmetric = "click"\nrule = "non_inferior"\nmargin = nan\n', "[criterion 2] margin = nan is not a valid threshold"),
    ('[[criterion]]\nmetric = "click"\nrule = "improves"\nmin_effect = inf\n', "[criterion 2] min_effect = inf is not a valid threshold"),
    ('[output]\nout = ""\n', '[output] out = "" is empty'),
    ('[output]\nreport = ""\n', '[output] report = "" is empty'),
    ("[causal]\ntreatment = \"recommended\"\noutcome = \"watch_seconds\"\nconfounders = [1]\n",
     "[causal] confounders = [1] must list one or more names"),
    ("[causal]\ntreatment = \"recommended\"\noutcome = \"\"\n", '[causal] outcome = "" is empty'),
])
def test_invalid_settings_are_configuration_errors(tmp_path, capsys, monkeypatch, extra, needle):
    from livegate import datasets
    monkeypatch.setattr(datasets, "load_logs", lambda *a, **k: pytest.fail("read the data"))
    config = tmp_path / "gate.toml"
    config.write_text(BASE + extra)
    assert cli.main(["gate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    line = next((line for line in err.splitlines() if needle in line), None)
    assert line is not None, err
    assert str(config) in line and ". Fix: " in line and "Traceback" not in err


@pytest.mark.parametrize("base, extra, needle", [
    (BASE.replace('logs = "logs.parquet"', 'logs = ""'), "", '[data] logs = "" is empty'),
    (BASE.replace('logs = "logs.parquet"', 'logs = "logs.parquet"\ncontext = [1, 2]'), "",
     "[data] context = [1, 2] must list one or more names"),
    (BASE.replace('logs = "logs.parquet"', 'logs = "logs.parquet"\ncontext = []'), "",
     "[data] context = [] must list one or more names"),
    (BASE.replace('policy = "better.parquet"', 'policy = ""'), "", '[candidate 1] policy = "" is empty'),
])
def test_empty_paths_and_names_are_configuration_errors(tmp_path, capsys, base, extra, needle):
    config = tmp_path / "gate.toml"
    config.write_text(base + extra)
    assert cli.main(["gate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Fix: " in err and "Traceback" not in err


def test_every_invalid_setting_is_reported_at_once(tmp_path, capsys):
    config = tmp_path / "gate.toml"
    config.write_text(BASE + "[diagnostics]\nmin_ess = nan\nmax_unsupported_mass = 2\n"
                             "[evaluation]\nmax_weight = -1\nalpha = 1\n[output]\nout = \"\"\n")
    assert cli.main(["gate", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "invalid input (5 problems)" in err
    for key in ("min_ess", "max_unsupported_mass", "max_weight", "alpha", "[output] out"):
        assert key in err


def test_unknown_refutation_is_a_configuration_error_before_data_is_read(tmp_path, capsys, monkeypatch):
    from livegate import datasets
    monkeypatch.setattr(datasets, "load_logs", lambda *a, **k: pytest.fail("read the data"))
    config = tmp_path / "gate.toml"
    config.write_text(BASE + '[causal]\ntreatment = "recommended"\noutcome = "watch_seconds"\n'
                             'refutations = ["nosuch"]\n')
    assert cli.main(["gate", "--config", str(config)]) == 2
    assert f"{config}: [causal] refutations: 'nosuch' is not a refutation" in capsys.readouterr().err


def test_valid_level_and_gamma_are_stored(tmp_path):
    config = tmp_path / "gate.toml"
    config.write_text(BASE + '[evaluation]\nlevel = "session"\ngamma = 0.99\n')
    cfg = load_gate_config(config)
    assert (cfg.level, cfg.gamma) == ("session", 0.99)
    config.write_text(BASE)
    cfg = load_gate_config(config)
    assert (cfg.level, cfg.gamma) == ("decision", 1.0)
    assert (cfg.min_ess, cfg.min_ess_share, cfg.max_unsupported_mass, cfg.max_mean_weight_z) == \
        (DEFAULT_MIN_ESS, DEFAULT_MIN_ESS_SHARE, DEFAULT_MAX_UNSUPPORTED_MASS, DEFAULT_MAX_MEAN_WEIGHT_Z)


# --- settings checked against the data ------------------------------------------------------------

def test_a_max_weight_below_an_observed_weight_is_an_input_error(demo, tmp_path, capsys):
    """A weight bound 'known by design' that the data break: never a guaranteed interval."""
    policy = demo.root / "policies" / "better.parquet"
    weights = demo.pi_logged("better") / demo.sim.logs["propensity"].to_numpy()
    above = int(np.count_nonzero(weights > 2))
    assert weights.max() > 50 and above > 100
    code, _, _ = _gate(tmp_path, "better", policy, logs=demo.root / "logs.parquet",
                       evaluation='estimator = "ips"\nci = "bernstein"\nmax_weight = 2\n')
    err = capsys.readouterr().err
    assert code == 2
    assert f"[evaluation] max_weight: {above:,} rows of policy 'better' have an importance weight above the bound 2" \
        in err and "Fix: " in err
    # the same on the command line
    args = ["evaluate", "--logs", str(demo.root / "logs.parquet"), "--policy", f"better={policy}",
            "--reward", "click", "--estimators", "ips", "--ci", "bernstein", "--max-weight", "2", "--quiet"]
    assert cli.main(args) == 2
    assert f"--max-weight: {above:,} rows of policy 'better' have an importance weight above" in capsys.readouterr().err
    # a bound that holds is accepted
    assert cli.main(args[:-3] + ["--max-weight", str(float(np.ceil(weights.max()))), "--quiet"]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "0.5"])
def test_max_weight_on_the_command_line_is_validated_before_reading(demo, capsys, value):
    args = ["evaluate", "--logs", str(demo.root / "logs.parquet"), "--policy",
            f"better={demo.root / 'policies' / 'better.parquet'}", "--reward", "click", "--max-weight", value]
    assert cli.main(args) == 2
    assert f"--max-weight: {float(value)} is not a finite number >= 1" in capsys.readouterr().err


def test_a_rewards_name_that_shadows_a_column_is_an_error(demo, tmp_path, capsys):
    policy = demo.root / "policies" / "worse.parquet"
    extra = '[rewards]\nwatch_seconds = "-1*watch_seconds"\n'
    code, _, _ = _gate(tmp_path, "worse", policy, logs=demo.root / "logs.parquet", extra=extra)
    err = capsys.readouterr().err
    assert code == 2
    assert "[rewards]: the metric 'watch_seconds' = '-watch_seconds' has the name of a column of the logs" in err
    assert "Fix: give the metric its own name" in err
    # a name for the column itself, or a new name, is fine
    ok = '[rewards]\nclick = "click"\nengagement = "watch_seconds + 50*gift_value"\n'
    code, doc, _ = _gate(tmp_path, "worse", policy, logs=demo.root / "logs.parquet", extra=ok, name="ok")
    assert code == 1 and doc["decision"] == "fail"
    # on the command line too
    code = cli.main(["evaluate", "--logs", str(demo.root / "logs.parquet"), "--policy", f"worse={policy}",
                     "--reward", "watch_seconds=-1*watch_seconds", "--quiet"])
    assert code == 2 and "--reward: the metric 'watch_seconds' = '-watch_seconds' has the name of a column" in \
        capsys.readouterr().err


def test_the_same_metric_name_twice_is_an_error(demo, capsys):
    import livegate

    args = ["evaluate", "--logs", str(demo.root / "logs.parquet"), "--policy",
            f"better={demo.root / 'policies' / 'better.parquet'}", "--reward", "m=watch_seconds",
            "--reward", "m=click", "--quiet"]
    assert cli.main(args) == 2
    assert "--reward: the metric name 'm' is given twice ('watch_seconds', 'click')" in capsys.readouterr().err
    with pytest.raises(livegate.InputError, match="given twice"):
        livegate.evaluate(demo.sim.logs, {"better": demo.sim.policies["better"]},
                          rewards=["m=watch_seconds", "m=click"], estimators="snips")
