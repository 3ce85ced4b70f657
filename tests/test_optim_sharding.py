"""Optimizers under jit with parameters sharded over 8 fake CPU devices match unsharded runs.

One subprocess (XLA_FLAGS must be set before jax is imported) runs every sharding check and
prints a JSON summary that the test asserts on.
"""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    import specjax.optim as so

    mesh = Mesh(np.array(jax.devices()), ("d",))
    key = jax.random.PRNGKey(0)
    params = {
        f"block_{i}": {"mlp": {"kernel": jax.random.normal(jax.random.fold_in(key, i), (32, 64))},
                       "ln": {"scale": jnp.ones(64)}}
        for i in range(3)
    }
    params["head"] = {"kernel": jax.random.normal(key, (64, 16))}
    grads = jax.tree.map(lambda x: jnp.cos(x * 3.0), params)

    def shard(x):
        spec = P(None, "d") if x.ndim == 2 and x.shape[1] % 8 == 0 else P()
        return jax.device_put(x, NamedSharding(mesh, spec))

    out = {"devices": len(jax.devices())}
    optimizers = {
        "muon": lambda: so.muon(0.02, weight_decay=0.1),
        "muon_stack": lambda: so.muon(0.02, weight_decay=0.1, mesh=mesh, stack_axis="d"),
        "spectra_adamw": lambda: so.spectra_adamw(0.01, 0.5),
        "gated": lambda: so.gated_spectral(0.1),
    }
    for name, make in optimizers.items():
        tx = make()
        extra = {}
        if name == "gated":
            extra = {"activation_stable_ranks": {f"block_{i}": {"mlp": {"kernel": 2.0}}
                                                 for i in range(3)}}

        def step(p, g):
            u, _ = tx.update(g, tx.init(p), p, **extra)
            return u

        ref = jax.jit(step)(params, grads)
        sp, sg = jax.tree.map(shard, params), jax.tree.map(shard, grads)
        fn = jax.jit(step)
        got = fn(sp, sg)
        err = max(float(jnp.max(jnp.abs(a - b))) for a, b in
                  zip(jax.tree.leaves(got), jax.tree.leaves(ref)))
        hlo = fn.lower(sp, sg).compile().as_text()
        out[name] = {"max_abs_err": err, "all_reduce": hlo.count("all-reduce("),
                     "sharded": not got["block_0"]["mlp"]["kernel"].sharding.is_fully_replicated}
    print("RESULT" + json.dumps(out))
    """
)


def test_sharded_updates_match_unsharded():
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = f"{root}{os.pathsep}{env.get('PYTHONPATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT"))
    result = json.loads(line[len("RESULT") :])
    assert result["devices"] == 8
    for name in ("muon", "muon_stack", "spectra_adamw", "gated"):
        assert result[name]["max_abs_err"] < 1e-5, (name, result[name])
    # Sharding the stack axis: each device orthogonalizes whole matrices, so the
    # Newton–Schulz iterations need no all-reduce of a sharded Gram matrix.
    assert result["muon_stack"]["all_reduce"] < result["muon"]["all_reduce"], result
