"""Theory-level facts of Davis & Drusvyatskiy (2025) and the GD / SpecGD steps (float64).

References: numpy float64 SVD/eigh for every spectral quantity; closed forms for the
spike limits; exact inequalities that follow from the smoothness bounds.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.studies._specgd import one_step, problems, steps


def _np_problem(key, **kw):
    p = problems.random_feature_problem(key, **kw)
    return np.asarray(p.A_kxn), np.asarray(p.Y_mxn)


def _np_stable_rank(A):
    return float((A**2).sum() / np.linalg.eigvalsh(A @ A.T)[-1])


def test_relu_features_stable_rank_tends_to_pi():
    """st(ReLU(VX)) → E[relu(z)²]/E[relu(z)]² = (1/2)/(1/2π) = π as the width grows.

    The mean spike E[relu(z)]·𝟙𝟙ᵀ carries ‖A‖₂² ≈ kn/(2π) of ‖A‖_F² ≈ kn/2. Measured finite-size
    deficit π − st ≈ 14/k (k = 200…1600, n = 2k, d = k/2; seed spread ≈ 0.002), so at k = 600
    we allow |st − π| < 0.05 (about twice the expected deficit), and the deficit must shrink.
    """
    with jax.enable_x64(True):
        small = [
            _np_stable_rank(
                _np_problem(jax.random.PRNGKey(s), width=150, input_dim=75, num_samples=300)[0]
            )
            for s in range(2)
        ]
        A, _ = _np_problem(jax.random.PRNGKey(7), width=600, input_dim=300, num_samples=1200)
    large = _np_stable_rank(A)
    assert abs(large - math.pi) < 0.05, f"st(ReLU features) = {large}, expected π ± 0.05"
    assert math.pi - large < math.pi - max(small), (small, large)
    assert problems.spike_limit("relu") == pytest.approx(math.pi)


def test_squared_relu_features_stable_rank_below_six():
    """st(relu(VX)²) < E[z⁴1{z>0}]/E[z²1{z>0}]² = (3/2)/(1/4) = 6; deficit ≈ 70/k measured."""
    with jax.enable_x64(True):
        ranks = {
            k: _np_stable_rank(
                _np_problem(
                    jax.random.PRNGKey(k),
                    width=k,
                    input_dim=k // 2,
                    num_samples=2 * k,
                    feature="relu_square",
                )[0]
            )
            for k in (100, 600)
        }
    assert all(r < 6.0 for r in ranks.values()), ranks
    assert 6.0 - ranks[600] < 0.3, ranks
    assert problems.spike_limit("relu_square") == 6.0


def test_swiglu_features_have_no_spike():
    """SwiGLU features are centred: st(A) is an order of magnitude above π at k = 100."""
    with jax.enable_x64(True):
        A, _ = _np_problem(
            jax.random.PRNGKey(0), width=100, input_dim=50, num_samples=400, feature="swiglu"
        )
    assert _np_stable_rank(A) > 15


def _numpy_steps(W, A, Y):
    """Independent float64 GD and SpecGD steps (SVD-based polar factor)."""
    n = A.shape[1]
    G = (W @ A - Y) @ A.T / n
    sigma_A = np.linalg.svd(A, compute_uv=False)
    L_F, L_op = sigma_A[0] ** 2 / n, (A**2).sum() / n
    U, s, Vt = np.linalg.svd(G, full_matrices=False)
    return G, W - G / L_F, W - (s.sum() / L_op) * (U @ Vt), s


@pytest.mark.parametrize("feature", ["relu", "swiglu"])
def test_steps_match_numpy_reference(feature):
    with jax.enable_x64(True):
        p = problems.random_feature_problem(
            jax.random.PRNGKey(3), width=12, input_dim=6, num_samples=30, feature=feature
        )
        W = jax.random.normal(jax.random.PRNGKey(4), (12, 12), jnp.float64) * 0.3
        L = steps.smoothness(p.A_kxn)
        G = steps.gradient(W, p)
        got = (
            np.asarray(G),
            np.asarray(steps.gd_update(W, G, L)),
            np.asarray(steps.specgd_update(W, G, L)),
        )
        loss = float(steps.loss(W, p))
        traj = steps.trajectory(W, p, L, method="specgd", num_steps=2)
    A, Y, Wn = np.asarray(p.A_kxn), np.asarray(p.Y_mxn), np.asarray(W)
    G_ref, gd_ref, sd_ref, s = _numpy_steps(Wn, A, Y)
    np.testing.assert_allclose(got[0], G_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(got[1], gd_ref, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(got[2], sd_ref, rtol=1e-10, atol=1e-12)
    assert loss == pytest.approx(0.5 * ((Wn @ A - Y) ** 2).sum() / A.shape[1], rel=1e-13)
    # The scanned trajectory takes the same steps and logs nr(∇L(W_t)) = (Σσ)²/Σσ².
    assert float(traj.nuclear_rank[0]) == pytest.approx(s.sum() ** 2 / (s**2).sum(), rel=1e-10)
    _, _, sd2_ref, _ = _numpy_steps(sd_ref, A, Y)
    np.testing.assert_allclose(np.asarray(traj.W_final), sd2_ref, rtol=1e-9, atol=1e-11)


def test_gd_iterate_matches_trajectory():
    with jax.enable_x64(True):
        p = problems.random_feature_problem(
            jax.random.PRNGKey(0), width=10, input_dim=5, num_samples=20
        )
        L = steps.smoothness(p.A_kxn)
        W0 = jnp.zeros((10, 10))
        traj = steps.trajectory(W0, p, L, method="gd", num_steps=7)
        W7 = steps.gd_iterate(W0, p, L, 7)
        loss7 = float(steps.loss(W7, p))
    np.testing.assert_allclose(np.asarray(W7), np.asarray(traj.W_final), rtol=1e-12, atol=1e-14)
    assert float(traj.loss[7]) == pytest.approx(loss7, rel=1e-12)
    assert np.all(np.diff(np.asarray(traj.loss)) <= 0), "GD with step 1/L_F must descend"


def test_nuclear_rank_at_zero_init_is_order_one_then_jumps():
    """nr(∇L(0)) stays O(1) as k quadruples; nr(∇L(W₁)) grows with k (paper's burn-in claim)."""
    nr0, nr1 = {}, {}
    with jax.enable_x64(True):
        for k in (64, 256):
            p = problems.random_feature_problem(
                jax.random.PRNGKey(1), width=k, input_dim=k // 2, num_samples=2 * k
            )
            L = steps.smoothness(p.A_kxn)
            traj = steps.trajectory(jnp.zeros((k, k)), p, L, method="gd", num_steps=1)
            nr0[k], nr1[k] = (float(v) for v in traj.nuclear_rank)
    assert all(v < 12 for v in nr0.values()), nr0
    assert nr0[256] < 1.5 * nr0[64], nr0
    assert nr1[256] > 3 * nr1[64] and nr1[256] > 3 * nr0[256], (nr0, nr1)


FAMILIES = [
    ("relu", "realizable"),
    ("relu", "teacher_student"),
    ("relu_square", "realizable"),
    ("swiglu", "realizable"),
    ("linear", "realizable"),
]


def test_one_step_implication_and_bracket_on_random_instances():
    """nr ≥ 2 st ⇒ L(W_SD) ≤ L(W_GD) and nr/(2st) ≤ measured ≤ 2nr/st, on a seeded sweep.

    The sweep must contain instances on both sides of nr = 2 st, or the check says nothing.
    """
    results = []
    with jax.enable_x64(True):
        for index, (feature, target) in enumerate(FAMILIES):
            for seed in range(4):
                p = problems.random_feature_problem(
                    jax.random.PRNGKey(100 * index + seed),
                    width=16,
                    input_dim=8,
                    num_samples=40,
                    feature=feature,
                    target=target,
                )
                L = steps.smoothness(p.A_kxn)
                for t in (0, 1, 5, 40):
                    W = steps.gd_iterate(jnp.zeros((16, 16)), p, L, t)
                    r = one_step.one_step(W, p)
                    results.append(
                        (r, bool(one_step.implication_holds(r)), bool(one_step.within_bracket(r)))
                    )
    premise = [float(r.nuclear_rank) >= 2 * float(r.stable_rank) for r, _, _ in results]
    assert any(premise) and not all(premise), "sweep must cover both sides of nr = 2 st"
    assert all(h for _, h, _ in results)
    assert all(b for _, _, b in results)
    for (r, _, _), p in zip(results, premise, strict=True):
        if p:
            assert float(r.loss_sd) <= float(r.loss_gd) * (1 + 1e-12)


def test_one_step_numbers_match_numpy():
    with jax.enable_x64(True):
        p = problems.random_feature_problem(
            jax.random.PRNGKey(5), width=9, input_dim=4, num_samples=25
        )
        W = jnp.full((9, 9), 0.1)
        r = one_step.one_step(W, p)
    A, Y, Wn = np.asarray(p.A_kxn), np.asarray(p.Y_mxn), np.asarray(W)
    _, gd, sd, s = _numpy_steps(Wn, A, Y)

    def loss(M):
        return 0.5 * ((M @ A - Y) ** 2).sum() / A.shape[1]

    assert float(r.loss_gd) == pytest.approx(loss(gd), rel=1e-11)
    assert float(r.loss_sd) == pytest.approx(loss(sd), rel=1e-10)
    assert float(r.stable_rank) == pytest.approx(_np_stable_rank(A), rel=1e-10)
    assert float(r.nuclear_rank) == pytest.approx(s.sum() ** 2 / (s**2).sum(), rel=1e-10)
    measured = (loss(Wn) - loss(sd)) / (loss(Wn) - loss(gd))
    assert float(r.measured_ratio) == pytest.approx(measured, rel=1e-9)


def test_bad_inputs_raise_value_errors():
    key = jax.random.PRNGKey(0)
    with pytest.raises(ValueError, match="feature"):
        problems.random_feature_problem(key, width=4, input_dim=2, num_samples=8, feature="gelu")
    with pytest.raises(ValueError, match="target"):
        problems.random_feature_problem(key, width=4, input_dim=2, num_samples=8, target="noisy")
    with pytest.raises(ValueError, match="width"):
        problems.random_feature_problem(key, width=0, input_dim=2, num_samples=8)
    with jax.enable_x64(True):
        p = problems.random_feature_problem(key, width=4, input_dim=2, num_samples=8)
        L, W = steps.smoothness(p.A_kxn), jnp.zeros((4, 4))
        with pytest.raises(ValueError, match="method"):
            steps.trajectory(W, p, L, method="adam", num_steps=1)
