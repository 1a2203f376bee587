"""Harmonization.statistics='heads' / 'top:K': weights from S's statistics, update exact.

Reference, independent of vatt_gh.group_stats.top: every clip's forward-path gradients of every
variable materialised through the generic fallback (autodiff of each layer's call; checked
against explicit weight copies and the full gradient in test_group_stats); a group's pair is the
sum of its clips'. The weights (alpha_g, beta_g) come from the literal NumPy update of
tests/reference.py applied to S's part of the pair only (S's variables picked by name), and the expected update of
EVERY variable is sum_g alpha_g G_va,g + beta_g G_vt,g.
"""

import numpy as np
import pytest
import tensorflow as tf
from reference import flat_grads, np_update
from toy import flat_rows, loss_shares, micro_vatt, random_batch

from vatt_gh import group_stats, trainer
from vatt_gh.harmonize import Harmonization
from vatt_gh.harmonized_update import harmonized_update

B = 8
# loss shares: random_batch(8) has 7 clips with audio and 8 with text (the global valid counts)


# S's variables by name, for the reference (not from vatt_gh.group_stats.top).
IN_S = {
    "heads": ("/fac_head/",),
    "top:1": ("/fac_head/", "_post_projection/", "/encoder/final_norm/", "/encoder/layer_1/"),
}


def materialised(num_layers, statistics):
    """Micro VATT, a batch of 8 (a clip without audio, a padded narration), its per-clip
    materialised pairs (8, P) and the mask of S's entries in P."""
    tf.keras.utils.set_random_seed(0)
    vatt = micro_vatt(num_layers=num_layers)
    batch = random_batch(B, seed=1)
    vatt(batch, training=False)
    variables = vatt.trainable_variables
    g_va, g_vt, _ = group_stats.group_gradients(
        loss_shares(vatt, batch, 7.0, 8.0), variables, vatt, 1
    )
    in_s = np.concatenate(
        [
            np.full(int(np.prod(v.shape)), any(p in v.name for p in IN_S[statistics]))
            for v in variables
        ]
    )
    return vatt, batch, variables, flat_rows(g_va), flat_rows(g_vt), in_s


@pytest.fixture(scope="module")
def micro():
    """The micro VATT (one layer); S = the FAC head."""
    return materialised(1, "heads")


@pytest.fixture(scope="module")
def micro2():
    """The micro VATT with two layers; S = 'top:1' (layer_0 and the tokens stay below)."""
    return materialised(2, "top:1")


def head_weights(a, b, method, **kwargs):
    """(alpha, beta) of the literal NumPy update applied to the head's part (a, b) of a pair:
    the update is alpha a + beta b, solved by least squares (a, b are independent)."""
    u = np_update(a, b, method, **kwargs)
    (alpha, beta), *_ = np.linalg.lstsq(np.stack([a, b], 1), u, rcond=None)
    return alpha, beta


CASES = {
    "sum": {},
    "reweight": {},
    "realign": {},
    "curriculum": {"gamma": "median"},  # about half the groups dropped (group:8: the one)
    "both": {"gamma": "below_min"},  # none dropped, the conflicting ones projected
    "gradvac": {"phi_hat": 0.2},
}


@pytest.mark.parametrize("statistics,fixture", [("heads", "micro"), ("top:1", "micro2")])
@pytest.mark.parametrize("size", [1, B])
@pytest.mark.parametrize("method", list(CASES))
def test_update_is_the_per_group_formula_with_weights_from_s(
    request, method, size, statistics, fixture
):
    vatt, batch, variables, f_va, f_vt, in_head = request.getfixturevalue(fixture)
    groups = B // size
    g_va = f_va.reshape(groups, size, -1).sum(1)  # a group's pair is the sum of its clips'
    g_vt = f_vt.reshape(groups, size, -1).sum(1)
    h_va, h_vt = g_va[:, in_head], g_vt[:, in_head]
    cos = np.sum(h_va * h_vt, 1) / np.linalg.norm(h_va, axis=1) / np.linalg.norm(h_vt, axis=1)
    kwargs = dict(CASES[method])
    if kwargs.get("gamma") == "median":
        kwargs["gamma"] = float(np.median(cos)) if groups > 1 else float(cos[0]) + 0.01
    elif kwargs.get("gamma") == "below_min":
        kwargs["gamma"] = float(cos.min()) - 0.01
    ab = np.array([head_weights(a, b, method, **kwargs) for a, b in zip(h_va, h_vt)])
    want = ab[:, :1] * g_va + ab[:, 1:] * g_vt  # every variable, head weights
    want = want.sum(0)

    h = Harmonization(method, f"group:{size}", statistics=statistics)
    update, stats, _ = harmonized_update(
        loss_shares(vatt, batch, 7.0, 8.0),
        variables,
        vatt,
        h,
        kwargs.get("gamma"),
        kwargs.get("phi_hat"),
    )
    got = flat_grads([tf.convert_to_tensor(u) for u in update], [v.shape for v in variables])
    scale = np.linalg.norm(g_va.sum(0) + g_vt.sum(0))
    assert np.linalg.norm(got - want) / scale < 1e-4
    np.testing.assert_allclose(stats["cosine"], cos, atol=1e-4)
    np.testing.assert_allclose(stats["alpha"], ab[:, 0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(stats["beta"], ab[:, 1], rtol=1e-3, atol=1e-4)
    if method == "curriculum":
        assert 0 < stats["dropped"].numpy().sum() < groups or groups == 1
    # The backbone's share is not the head's: the test covers the pass below S (a dropped
    # single group, curriculum at group:8, gives nothing anywhere).
    assert np.linalg.norm(want[~in_head]) > 0.1 * np.linalg.norm(want) or not np.any(ab)


def head_pairs(micro, size):
    _, _, _, f_va, f_vt, in_head = micro
    groups = B // size
    g_va = f_va.reshape(groups, size, -1).sum(1)
    g_vt = f_vt.reshape(groups, size, -1).sum(1)
    return g_va, g_vt, g_va[:, in_head], g_vt[:, in_head]


def test_train_step_with_heads_applies_the_formula(micro):
    """PretrainModel's compiled step (SGD, lr 1e3), `both` at group:1 with a gamma that
    drops one clip and projects the other conflicting ones: (w0 - w1) / lr is the formula."""
    vatt, batch, _, _, _, _ = micro
    g_va, g_vt, h_va, h_vt = head_pairs(micro, 1)
    cos = np.sum(h_va * h_vt, 1) / np.linalg.norm(h_va, axis=1) / np.linalg.norm(h_vt, axis=1)
    gamma = float(np.sort(cos)[0] + np.sort(cos)[1]) / 2
    assert np.sum(cos < 0) >= 2  # one dropped, at least one projected
    h = Harmonization("both", "group:1", gamma_start=gamma, gamma_end=gamma, statistics="heads")
    model = trainer.PretrainModel(micro_vatt(), h)
    model(batch, training=False)
    model.vatt.set_weights(vatt.get_weights())
    lr = 1e3
    model.compile(optimizer=tf.keras.optimizers.SGD(lr))
    variables = model.vatt.trainable_variables
    shapes = [v.shape for v in variables]
    w0 = flat_grads([v.numpy() for v in variables], shapes)
    logs = model.make_train_function()(iter(tf.data.Dataset.from_tensors(batch).repeat()))
    got = (w0 - flat_grads([v.numpy() for v in variables], shapes)) / lr
    ab = np.array([head_weights(a, b, "both", gamma=gamma) for a, b in zip(h_va, h_vt)])
    assert ab[:, 0].tolist().count(0.0) == 1 and np.sum(ab[:, 0] > 1) >= 1
    # The step applies half the harmonized sum: VATT's objective is (loss_va + loss_vt) / 2.
    want = 0.5 * (ab[:, :1] * g_va + ab[:, 1:] * g_vt).sum(0)
    scale = 0.5 * np.linalg.norm(g_va.sum(0) + g_vt.sum(0))
    assert np.linalg.norm(got - want) / scale < 2e-3  # graph vs eager rounding (test_trainer)
    np.testing.assert_allclose(logs["cosines"], cos, atol=2e-4)


def test_heads_weights_differ_from_all_weights(micro):
    """'heads' and 'all' measure different cosines (so the test above can tell them apart)."""
    vatt, batch, variables, f_va, f_vt, in_head = micro
    _, stats, _ = harmonized_update(
        loss_shares(vatt, batch, 7.0, 8.0),
        variables,
        vatt,
        Harmonization("realign", statistics="heads"),
    )
    all_cos = np.sum(f_va * f_vt, 1) / np.linalg.norm(f_va, axis=1) / np.linalg.norm(f_vt, axis=1)
    assert np.abs(stats["cosine"].numpy() - all_cos).max() > 1e-2


def test_unknown_statistics_and_analysis_granularities_are_refused():
    with pytest.raises(ValueError, match=r"^Harmonization.statistics 'backbone': choose one of"):
        Harmonization(statistics="backbone")
    for bad in ("top:0", "top:", "top:x", "top:-1", None):
        with pytest.raises(ValueError, match=r"^Harmonization.statistics .*: choose one of"):
            Harmonization(statistics=bad)
    with pytest.raises(ValueError, match="needs a 'group:N' or 'replica' granularity"):
        Harmonization(granularity="example", analysis=True, statistics="heads")
    assert Harmonization().statistics == "all"


def test_a_model_without_a_head_or_with_coupling_below_it_is_refused():
    dense = tf.keras.Sequential([tf.keras.layers.Dense(2)])
    dense(tf.ones([2, 3]))
    loss_fn = lambda: (tf.ones([2]), tf.ones([2]), None)
    with pytest.raises(ValueError, match="has no FAC head"):
        group_stats.top_forward(loss_fn, dense.trainable_variables, dense, "heads")

    class Coupled(tf.keras.Model):
        def __init__(self):
            super().__init__(name="coupled")
            self.norm = tf.keras.layers.BatchNormalization()
            self.fac_head = tf.keras.layers.Dense(2)

    model = Coupled()
    with pytest.raises(ValueError, match=r"couple the clips below the top part"):
        group_stats.top_forward(loss_fn, [], model, "heads")
    with pytest.raises(ValueError, match=r"the model 'coupled' has no `encoders`"):
        group_stats.top_forward(loss_fn, [], model, "top:1")


def test_more_top_layers_than_the_encoder_has_are_refused(micro):
    vatt, batch, variables, *_ = micro
    h = Harmonization("both", statistics="top:2")
    with pytest.raises(ValueError, match=r"the encoder 'encoder' has only 1 layers"):
        harmonized_update(loss_shares(vatt, batch, 7.0, 8.0), variables, vatt, h, -0.3)


def test_tensorboard_says_which_statistics_a_run_uses(tmp_path):
    from vatt_gh import summaries

    writer = tf.summary.create_file_writer(str(tmp_path))
    summaries.write_harmonization(writer, 0, Harmonization("both", statistics="heads"))
    writer.close()
    (path,) = tmp_path.glob("events.out.tfevents.*")
    texts = [
        tf.make_ndarray(value.tensor).item().decode()
        for event in tf.compat.v1.train.summary_iterator(str(path))
        for value in event.summary.value
        if value.tag == "harmonize/settings"
    ]
    assert texts == [
        "method both, granularity group:1, statistics 'heads': cosines over the FAC head's "
        "variables only; the update below them from one backward pass"
    ]
