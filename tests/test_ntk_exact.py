"""Exact blocked NTK against a direct float64 `jax.jacrev` contraction, and its bad inputs."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

from specjax.ntk import exact_ntk


class TinyMLP(nn.Module):
    @nn.compact
    def __call__(self, x):
        x = x.reshape(x.shape[0], -1)
        x = jnp.tanh(nn.Dense(8)(x))
        return nn.Dense(3)(x)


MODEL = TinyMLP()
X = jax.random.normal(jax.random.PRNGKey(1), (7, 2, 2))
PARAMS = MODEL.init(jax.random.PRNGKey(0), X)
PROBE = jnp.array([0.5, -1.0, 2.0])


def jacrev_reference(output):
    """K from the full Jacobian (n, C, P) by jacrev, contracted in float64 numpy."""
    theta, unravel = ravel_pytree(PARAMS)
    jac = np.asarray(jax.jacrev(lambda t: MODEL.apply(unravel(t), X))(theta), np.float64)
    if output == "logit":
        jac = jac[:, 1:2]
    elif output == "probe":
        jac = np.einsum("c,icp->ip", np.asarray(PROBE, np.float64), jac)[:, None]
    return np.einsum("icp,jcp->ij", jac, jac)


@pytest.mark.parametrize("output", ["trace", "logit", "probe"])
@pytest.mark.parametrize("block_size,cache_bytes", [(3, 2**20), (3, 0), (16, 2**20)])
def test_exact_ntk_matches_jacrev(output, block_size, cache_bytes):
    # block 3 with n = 7 exercises padding and off-diagonal blocks; cache 0 the recompute path.
    k = exact_ntk(MODEL.apply, PARAMS, X, output=output, logit_index=1, probe=PROBE,
                  block_size=block_size, cache_bytes=cache_bytes)  # fmt: skip
    ref = jacrev_reference(output)
    assert k.shape == (7, 7)
    np.testing.assert_allclose(np.asarray(k), ref, rtol=1e-5, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_array_equal(np.asarray(k), np.asarray(k).T)


def test_trace_kernel_is_sum_of_logit_kernels():
    ks = [exact_ntk(MODEL.apply, PARAMS, X, output="logit", logit_index=c) for c in range(3)]
    k = exact_ntk(MODEL.apply, PARAMS, X, output="trace")
    np.testing.assert_allclose(np.asarray(k), np.asarray(sum(ks)), rtol=1e-5, atol=1e-6)


def test_single_output_model_accepted():
    apply_1d = lambda p, x: MODEL.apply(p, x)[:, 0]  # noqa: E731
    k = exact_ntk(apply_1d, PARAMS, X)
    k0 = exact_ntk(MODEL.apply, PARAMS, X, output="logit", logit_index=0)
    np.testing.assert_allclose(np.asarray(k), np.asarray(k0), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs,apply_fn,x,match",
    [
        ({}, MODEL.apply, X[:0], "non-empty batch"),
        ({}, lambda p, x: {"logits": MODEL.apply(p, x)}, X, "must return one array"),
        ({}, lambda p, x: MODEL.apply(p, x)[:1].repeat(2, 0), X, "batch = x.shape"),
        ({"output": "mean"}, MODEL.apply, X, "output must be one of"),
        ({"output": "probe", "probe": jnp.ones(4)}, MODEL.apply, X, r"probe must have shape"),
        ({"output": "probe"}, MODEL.apply, X, "needs a probe"),
        ({"output": "logit", "logit_index": 3}, MODEL.apply, X, "logit_index"),
        ({"block_size": 0}, MODEL.apply, X, "block_size"),
        ({"cache_bytes": -1}, MODEL.apply, X, "cache_bytes"),
        ({}, MODEL.apply, [1.0, 2.0], "must be an array"),
    ],
)
def test_bad_inputs_raise_value_error(kwargs, apply_fn, x, match):
    with pytest.raises(ValueError, match=match):
        exact_ntk(apply_fn, PARAMS, x, **kwargs)
