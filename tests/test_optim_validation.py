"""Bad optimizer arguments: ValueError naming the argument / parameter path and the value."""

import jax
import jax.numpy as jnp
import optax
import pytest

import specjax.optim as so

PARAMS = {"block": {"kernel": jnp.zeros((4, 4))}, "scan": {"kernel": jnp.zeros((2, 4, 4))}}


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (lambda: so.clip_by_spectral_norm(0.0), r"c must be .*0\.0"),
        (lambda: so.clip_by_spectral_norm(-1.0), r"c must be .*-1\.0"),
        (lambda: so.clip_by_spectral_norm(1.0, kind="medium"), r"kind.*'medium'"),
        (lambda: so.spectra_adamw(1e-3, 0.0), r"c must be"),
        (lambda: so.spectra_adamw(-1e-3, 1.0), r"learning_rate.*-0\.001"),
        (lambda: so.muon(0.0), r"learning_rate.*0\.0"),
        (lambda: so.muon(0.1, iters=0), r"iters.*0"),
        (lambda: so.scale_by_polar(iters=2.5), r"iters.*2\.5"),
        (lambda: so.gated_spectral(0.1, iters=0), r"iters.*0"),
        (lambda: so.clip_by_spectral_norm(1.0, iters=-1), r"iters.*-1"),
        (lambda: so.spectra_adamw(1e-3, 1.0, iters=0), r"iters.*0"),
        (lambda: so.muon(0.1, method="qr"), r"method.*'qr'"),
        (lambda: so.scale_by_polar(scaling="mup"), r"scaling.*'mup'"),
        (lambda: so.gated_spectral(0.1, euclidean="lion"), r"euclidean.*'lion'"),
        (lambda: so.spectra_signum(0.1, 1.0, pre_clip=-2.0), r"pre_clip.*-2\.0"),
    ],
)
def test_bad_hyperparameters_fail_when_built(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()


@pytest.mark.parametrize(
    "tx",
    [
        so.scale_by_polar(),
        so.muon(0.1),
        so.clip_by_spectral_norm(1.0),
        so.spectra_adamw(1e-3, 1.0),
        so.gated_spectral(0.1),
    ],
    ids=["scale_by_polar", "muon", "clip", "spectra", "gated"],
)
def test_undeclared_3d_parameter_fails_at_init_naming_its_path(tx):
    with pytest.raises(ValueError, match=r"scan/kernel.*\(2, 4, 4\)"):
        tx.init(PARAMS)


def test_bad_reshape_declaration_names_path():
    with pytest.raises(ValueError, match=r"block/kernel.*'stack'"):
        so.scale_by_polar(reshape={"block": {"kernel": "stack"}, "scan": {"kernel": "stack"}}).init(
            PARAMS
        )


def test_gated_needs_stable_ranks_for_every_block():
    tx = so.gated_spectral(0.1, reshape="stack")
    state = tx.init(PARAMS)
    with pytest.raises(ValueError, match=r"scan/kernel"):
        tx.update(PARAMS, state, PARAMS, activation_stable_ranks={"block": {"kernel": 1.0}})


def test_schedules_are_accepted():
    so.muon(optax.cosine_decay_schedule(0.02, 100)).init({"block": {"kernel": jnp.zeros((4, 4))}})


@pytest.mark.parametrize(
    ("build", "pattern"),
    [
        (
            lambda: so.clip_by_spectral_norm(float("nan")),
            r"c must be a positive number \(finite or inf\)",
        ),
        (lambda: so.clip_by_spectral_norm(-float("inf")), r"c must be .*-inf"),
        (lambda: so.spectra_adamw(1e-3, float("nan")), r"c must be"),
        (lambda: so.spectra_adamw(float("inf"), 1.0), r"learning_rate must be a positive finite"),
    ],
)
def test_infinite_clip_level_is_allowed_but_nan_and_negative_inf_are_not(build, pattern):
    with pytest.raises(ValueError, match=pattern):
        build()
    so.clip_by_spectral_norm(float("inf"))
    so.spectra_adamw(1e-3, float("inf"), pre_clip=float("inf"))


TRANSFORMS_WITH_NONE = {
    "scale_by_polar": lambda: so.scale_by_polar(),
    "muon": lambda: so.muon(0.1, weight_decay=0.1),
    "clip": lambda: so.clip_by_spectral_norm(1.0),
    "spectra": lambda: so.spectra_adamw(1e-3, 1.0, weight_decay=0.1),
    "gated": lambda: so.gated_spectral(0.1, weight_decay=0.1),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS_WITH_NONE))
def test_none_leaves_pass_through_like_optax(name):
    """optax treats None as an empty subtree (optax.adamw accepts it); so does every transform."""
    params = {"block": {"kernel": jnp.ones((4, 3))}, "skip": None, "b": [None, jnp.ones(3)]}
    ref = optax.adamw(1e-3)
    ref_u, _ = ref.update(params, ref.init(params), params)
    tx = TRANSFORMS_WITH_NONE[name]()
    extra = {"activation_stable_ranks": {"block": {"kernel": 1.0}}} if name == "gated" else {}
    u, _ = tx.update(params, tx.init(params), params, **extra)
    assert jax.tree.structure(u) == jax.tree.structure(ref_u)
    assert u["skip"] is None and u["b"][0] is None


def test_gated_weight_decay_without_params_is_an_error_not_a_silent_no_op():
    params = {"block": {"kernel": jnp.ones((4, 3))}}
    tx = so.gated_spectral(0.1, weight_decay=0.1)
    st_a = {"block": {"kernel": 1.0}}
    with pytest.raises(ValueError, match=r"weight_decay=0\.1 needs params="):
        tx.update(params, tx.init(params), None, activation_stable_ranks=st_a)
    so.gated_spectral(0.1).update(params, tx.init(params), None, activation_stable_ranks=st_a)
