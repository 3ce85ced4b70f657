"""Every invalid argument raises ValueError naming the argument and the value, at trace time."""

import jax
import jax.numpy as jnp
import pytest

import specjax as sj
from specjax.linalg import newton_schulz, polar_express_coefficients

X = jnp.ones((4, 3))
KEY = jax.random.PRNGKey(0)

CASES = [
    ("x", lambda: sj.stable_rank(jnp.ones(3))),
    ("x", lambda: sj.nuclear_rank(jnp.float32(1.0))),
    ("x", lambda: sj.entropy_effective_rank(jnp.ones((0, 3)))),
    ("x", lambda: sj.kernel_effective_rank(X)),  # not square
    ("x", lambda: sj.spectral_norm(jnp.ones(5))),
    ("x", lambda: sj.polar(jnp.ones(5))),
    ("x", lambda: sj.soft_spectral_clip(jnp.ones(5), 1.0)),
    ("x", lambda: sj.hard_spectral_clip(jnp.ones(5), 1.0)),
    ("x", lambda: sj.randomized_svd(jnp.ones(5), 1, key=KEY)),
    ("x", lambda: sj.stable_rank(jnp.ones((3, 3), jnp.complex64))),
    ("method", lambda: sj.stable_rank(X, method="lanczos")),
    ("method", lambda: sj.polar(X, method="qr")),
    ("method", lambda: sj.soft_spectral_clip(X, 1.0, method="eig")),
    ("max_iters", lambda: sj.stable_rank(X, method="power", max_iters=0)),
    ("tol", lambda: sj.spectral_norm(X, tol=-1.0)),
    ("max_iters", lambda: sj.spectral_norm(X, max_iters=0)),
    ("block_size", lambda: sj.spectral_norm(X, block_size=0)),
    ("rank", lambda: sj.randomized_svd(X, 4, key=KEY)),
    ("rank", lambda: sj.randomized_svd(X, 0, key=KEY)),
    ("rank", lambda: sj.randomized_svd(X, 2.0, key=KEY)),
    ("oversample", lambda: sj.randomized_svd(X, 2, oversample=-1, key=KEY)),
    ("iters", lambda: sj.randomized_svd(X, 2, iters=-1, key=KEY)),
    ("iters", lambda: sj.polar(X, iters=0)),
    ("iters", lambda: sj.polar(X, method="polar_express", iters=-2)),
    ("iters", lambda: sj.soft_spectral_clip(X, 1.0, iters=0)),
    ("max_iters", lambda: sj.soft_spectral_clip(X, 1.0, max_iters=2)),
    ("iters", lambda: polar_express_coefficients(0)),
    ("coefficients", lambda: newton_schulz(X, [(1.0, 2.0)])),
    ("eps", lambda: sj.polar(X, eps=-1.0)),
    ("c", lambda: sj.soft_spectral_clip(X, 0.0)),
    ("c", lambda: sj.soft_spectral_clip(X, -2.0)),
    ("c", lambda: sj.hard_spectral_clip(X, 0)),
    ("c", lambda: sj.hard_spectral_clip(X, float("nan"))),
    ("c", lambda: sj.hard_spectral_clip(X, jnp.asarray([1.0, -1.0]))),
]


@pytest.mark.parametrize(("argument", "call"), CASES)
def test_invalid_argument_raises_value_error(argument, call):
    with pytest.raises(ValueError, match=rf"^{argument}\b") as info:
        call()
    assert "got" in str(info.value)  # names the offending value


def test_errors_raise_at_trace_time_under_jit():
    with pytest.raises(ValueError, match="rank"):
        jax.jit(lambda x: sj.randomized_svd(x, 5, key=KEY))(X)
    with pytest.raises(ValueError, match="c must be > 0"):
        jax.jit(lambda x: sj.soft_spectral_clip(x, -1.0))(X)
