"""Results do not depend on the number of BLAS threads (issue 13: OMP_NUM_THREADS=1 changed the last
digits of `ess` and `mean_weight_se`, so documents were not byte-identical across machines)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from livegate.datasets.io import dumps_json
from livegate.ope.diagnostics import weight_diagnostics
from livegate.ope.estimators import RowInputs, dr, ips, snips
from livegate.ope.inference import InfluenceCovariance, bootstrap_replicates


def _blas_threads() -> int:
    return max([i["num_threads"] for i in threadpool_info() if i.get("user_api") == "blas"] or [1])


@pytest.fixture(scope="module")
def heavy_inputs() -> RowInputs:
    rng = np.random.default_rng(5)
    n = 400_003   # large enough for a threaded BLAS to split the work, odd so no split is even
    weight = rng.lognormal(0.0, 1.5, n)
    q = rng.normal(50.0, 10.0, n)
    return RowInputs(reward=rng.lognormal(3.0, 1.0, n), weight=weight, q_logged=q, q_pi=q + rng.normal(0, 1, n))


def _everything(x: RowInputs) -> str:
    terms = [ips(x), snips(x), dr(x)]
    cov = InfluenceCovariance(terms)
    return dumps_json({"diagnostics": weight_diagnostics(x.weight), "cov": cov.cov.tolist(),
                       "boot": bootstrap_replicates(terms, 200, seed=3).tolist()})


def test_the_same_digits_with_one_and_with_all_blas_threads(heavy_inputs):
    threads = max(_blas_threads(), 2)
    with threadpool_limits(limits=threads, user_api="blas"):
        many = _everything(heavy_inputs)
    with threadpool_limits(limits=1, user_api="blas"):
        one = _everything(heavy_inputs)
    assert many == one
    assert json.loads(one)["diagnostics"]["ess"] > 0
