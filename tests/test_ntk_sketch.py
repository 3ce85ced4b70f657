"""Sketched NTK estimator: CountSketch algebra, unbiasedness, error vs width, bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from specjax import kernel_effective_rank
from specjax.ntk import (
    countsketch,
    effective_rank_from_sketches,
    exact_ntk,
    sketch_gradients,
    sketched_effective_rank,
)


class TinyMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Dense(16)(x))
        return nn.Dense(3)(x)


MODEL = TinyMLP()
X = jax.random.normal(jax.random.PRNGKey(1), (12, 5))
PARAMS = MODEL.init(jax.random.PRNGKey(0), X)
K_TRACE = np.asarray(exact_ntk(MODEL.apply, PARAMS, X, output="trace"), np.float64)
K_LOGIT = np.asarray(exact_ntk(MODEL.apply, PARAMS, X, output="logit"), np.float64)
GROUP = 4  # sketches per independent estimate


def grouped_estimates(z, d):
    """Split M sketches into independent groups of GROUP: one estimate per group."""
    m = z.shape[0] // GROUP
    groups = [slice(i * GROUP, (i + 1) * GROUP) for i in range(m)]
    return [effective_rank_from_sketches(z[g], d[g]) for g in groups]


def test_countsketch_equals_dense_sketch_matrix():
    p, s = 50, 7
    key_h, key_s, key_g = jax.random.split(jax.random.PRNGKey(4), 3)
    h = jax.random.randint(key_h, (p,), 0, s)
    sg = jax.random.rademacher(key_s, (p,), dtype=jnp.float32)
    g = jax.random.normal(key_g, (3, p))
    dense = np.zeros((s, p))
    dense[np.asarray(h), np.arange(p)] = np.asarray(sg)
    np.testing.assert_allclose(np.asarray(countsketch(g, h, sg, s)), np.asarray(g) @ dense.T,
                               rtol=1e-5, atol=1e-5)  # fmt: skip


@pytest.fixture(scope="module")
def trace_sketches():
    # 160 sketches = 40 independent estimates of 4 sketches each, from one compiled call.
    return sketch_gradients(MODEL.apply, PARAMS, X, jax.random.PRNGKey(7), sketch_width=8,
                            num_probes=2, num_sketches=40 * GROUP, output="trace")  # fmt: skip


def test_frobenius_and_trace_unbiased_over_seeds(trace_sketches):
    z, d = trace_sketches
    ests = grouped_estimates(z, d)
    frob = np.array([e.frob_sq for e in ests])
    exact = np.sum(K_TRACE**2)
    # ‖K‖_F² estimate is exactly unbiased: the mean over 40 seeds is within 4 standard errors.
    se = frob.std(ddof=1) / np.sqrt(len(frob))
    assert abs(frob.mean() - exact) < 4 * se
    # power check: squaring one sketch's K̂ (the naive estimator) is biased by far more
    naive = np.mean([np.sum((np.asarray(z[a]) @ np.asarray(z[a]).T) ** 2) for a in range(40)])
    assert naive - exact > 4 * se
    # d = probed squared gradient norms: E d_i = K_ii (probes with E vvᵀ = I).
    np.testing.assert_allclose(np.asarray(d).mean(axis=0), np.diag(K_TRACE), rtol=0.15)
    # r_eff: a ratio of unbiased estimates, consistent; mean within 4 SE (+1% ratio bias).
    r_hat = np.array([e.effective_rank for e in ests])
    r_exact = float(kernel_effective_rank(jnp.asarray(K_TRACE)))
    assert (
        abs(r_hat.mean() - r_exact) < 4 * r_hat.std(ddof=1) / np.sqrt(len(r_hat)) + 0.01 * r_exact
    )
    # the stated jackknife SE is calibrated to within a factor 2 of the spread over seeds
    stated = np.mean([e.effective_rank_stderr for e in ests])
    assert 0.5 < stated / r_hat.std(ddof=1) < 2.0


def test_error_falls_as_sketch_grows():
    errs = []
    r_exact = float(kernel_effective_rank(jnp.asarray(K_LOGIT)))
    for s in (4, 256):
        z, d = sketch_gradients(MODEL.apply, PARAMS, X, jax.random.PRNGKey(s), sketch_width=s,
                                num_sketches=20 * GROUP, output="logit")  # fmt: skip
        # fixed logit: d is the exact diagonal, so the trace is exact
        np.testing.assert_allclose(np.asarray(d[0]), np.diag(K_LOGIT), rtol=1e-4)
        errs.append(np.mean([abs(e.effective_rank - r_exact) for e in grouped_estimates(z, d)]))
    assert errs[1] < 0.5 * errs[0], errs


def test_sketched_rank_wrapper_and_determinism():
    kw = dict(sketch_width=64, num_probes=1, num_sketches=3, output="logit")
    a = sketched_effective_rank(MODEL.apply, PARAMS, X, jax.random.PRNGKey(0), **kw)
    b = sketched_effective_rank(MODEL.apply, PARAMS, X, jax.random.PRNGKey(0), **kw)
    assert a == b
    assert (a.sketch_width, a.num_probes, a.num_sketches, a.n) == (64, 1, 3, 12)
    assert a.trace == pytest.approx(np.trace(K_LOGIT), rel=1e-4)
    assert np.isfinite(a.effective_rank_stderr) and a.effective_rank_stderr > 0


@pytest.mark.parametrize(
    "kwargs,x,match",
    [
        ({"sketch_width": 0}, X, "sketch_width"),
        ({"sketch_width": 8, "num_sketches": 1}, X, "num_sketches"),
        ({"sketch_width": 8, "num_probes": 0}, X, "num_probes"),
        ({"sketch_width": 8, "num_probes": 2, "output": "logit"}, X, "num_probes must be 1"),
        ({"sketch_width": 8, "probe_dist": "uniform"}, X, "probe_dist"),
        ({"sketch_width": 8}, X[:0], "non-empty batch"),
        ({"sketch_width": 8, "output": "probe", "probe": jnp.ones(2)}, X, "probe must have"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, x, match):
    with pytest.raises(ValueError, match=match):
        sketched_effective_rank(MODEL.apply, PARAMS, x, jax.random.PRNGKey(0), **kwargs)


def test_non_array_output_raises():
    with pytest.raises(ValueError, match="must return one array"):
        sketched_effective_rank(lambda p, x: (MODEL.apply(p, x),), PARAMS, X,
                                jax.random.PRNGKey(0), sketch_width=8)  # fmt: skip


def test_mismatched_sketch_shapes_raise():
    with pytest.raises(ValueError, match="need z"):
        effective_rank_from_sketches(jnp.ones((3, 5, 4)), jnp.ones((3, 6)))
