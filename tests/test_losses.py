"""Reference tests for the K-view NT-Xent loss."""

import math

import pytest
import torch
import torch.nn.functional as F

from sklearn_ben.losses import MultiViewNTXentLoss


def _slow_loss(z, ids, temperature):
    """Appendix C.3, Eq. 2, one row and one term at a time."""
    z = [[v / math.sqrt(sum(u * u for u in row)) for v in row] for row in z.tolist()]
    ids = ids.tolist()
    total = 0.0
    for i in range(len(z)):
        positives = [p for p in range(len(z)) if p != i and ids[p] == ids[i]]
        pos_term = 0.0
        for p in positives:
            pos_term += sum(a * b for a, b in zip(z[i], z[p])) / temperature
        denominator = 0.0
        for j in range(len(z)):
            if j != i:
                denominator += math.exp(
                    sum(a * b for a, b in zip(z[i], z[j])) / temperature
                )
        total += -pos_term / len(positives) + math.log(denominator)
    return total / len(z)


def _simclr_nt_xent(z0, z1, temperature):
    """SimCLR's NT-Xent (lightly's formulation) for two views z0[i], z1[i]."""
    n = z0.shape[0]
    out = F.normalize(torch.cat([z0, z1]), dim=1)  # (2n, d)
    logits = out @ out.T / temperature  # (2n, 2n)
    logits = logits[~torch.eye(2 * n, dtype=torch.bool)].view(2 * n, 2 * n - 1)
    # after dropping the diagonal, the partner of row i sits at column n + i - 1
    # (first half) or i - n (second half)
    labels = torch.cat([torch.arange(n) + n - 1, torch.arange(n)])
    return F.cross_entropy(logits, labels)


def _views(n_units, n_views, dim=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n_units * n_views, dim, generator=generator, dtype=torch.float64)
    ids = torch.arange(n_units).repeat_interleave(n_views)
    return z, ids


@pytest.mark.parametrize("n_views", [2, 5])
@pytest.mark.parametrize("temperature", [0.05, 0.5, 2.0])
def test_multiview_ntxent_loss_matches_slow_loop(n_views, temperature):
    z, ids = _views(n_units=4, n_views=n_views)
    loss = MultiViewNTXentLoss(temperature)(z, ids)
    assert loss.item() == pytest.approx(_slow_loss(z, ids, temperature), rel=1e-9)


def test_multiview_ntxent_loss_unequal_groups_match_slow_loop():
    z, _ = _views(n_units=1, n_views=9)
    ids = torch.tensor([3, 3, 7, 7, 7, 7, 1, 1, 1])
    loss = MultiViewNTXentLoss(0.2)(z, ids)
    assert loss.item() == pytest.approx(_slow_loss(z, ids, 0.2), rel=1e-9)


@pytest.mark.parametrize("temperature", [0.05, 0.5])
def test_multiview_ntxent_loss_two_views_is_simclr_nt_xent(temperature):
    generator = torch.Generator().manual_seed(1)
    z0 = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    z1 = torch.randn(6, 5, generator=generator, dtype=torch.float64)
    ids = torch.cat([torch.arange(6), torch.arange(6)])
    loss = MultiViewNTXentLoss(temperature)(torch.cat([z0, z1]), ids)
    expected = _simclr_nt_xent(z0, z1, temperature)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_multiview_ntxent_loss_symmetric_under_row_permutation(seed):
    z, ids = _views(n_units=5, n_views=3)
    perm = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    loss = MultiViewNTXentLoss(0.1)
    torch.testing.assert_close(loss(z[perm], ids[perm]), loss(z, ids))


def test_multiview_ntxent_loss_symmetric_under_id_relabelling():
    z, ids = _views(n_units=5, n_views=3)
    loss = MultiViewNTXentLoss(0.1)
    torch.testing.assert_close(loss(z, 100 - 7 * ids), loss(z, ids))


@pytest.mark.parametrize("scale", [1e-3, 3.0, 1e4])
def test_multiview_ntxent_loss_invariant_to_row_scaling(scale):
    z, ids = _views(n_units=4, n_views=3)
    row_scale = scale * torch.linspace(0.5, 2.0, len(ids), dtype=z.dtype)[:, None]
    loss = MultiViewNTXentLoss(0.1)
    torch.testing.assert_close(loss(z * row_scale, ids), loss(z, ids))


def test_multiview_ntxent_loss_lower_when_views_agree():
    z, ids = _views(n_units=4, n_views=3)
    agreeing = z[::3].repeat_interleave(3, dim=0)  # views identical per unit
    loss = MultiViewNTXentLoss(0.1)
    assert loss(agreeing, ids) < loss(z, ids)


@pytest.mark.parametrize("temperature", [0.01, 0.05, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_multiview_ntxent_loss_gradients_finite(temperature, dtype):
    z, ids = _views(n_units=8, n_views=5, dim=16)
    z = z.to(dtype).requires_grad_()
    loss = MultiViewNTXentLoss(temperature)(z, ids)
    loss.backward()
    assert torch.isfinite(loss)
    assert torch.isfinite(z.grad).all()
    assert z.grad.abs().sum() > 0


def test_multiview_ntxent_loss_gradients_finite_for_identical_rows():
    z = torch.ones(6, 4, requires_grad=True)
    loss = MultiViewNTXentLoss(0.05)(z, torch.tensor([0, 0, 1, 1, 2, 2]))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


@pytest.mark.parametrize("temperature", [0, -0.1, float("nan"), "0.1", True])
def test_multiview_ntxent_loss_rejects_bad_temperature(temperature):
    with pytest.raises(ValueError, match="temperature should be a positive float"):
        MultiViewNTXentLoss(temperature)


def test_multiview_ntxent_loss_rejects_ids_of_wrong_length():
    z, ids = _views(n_units=3, n_views=2)
    with pytest.raises(ValueError, match=r"ids has shape \(5,\) but z has 6 rows"):
        MultiViewNTXentLoss()(z, ids[:5])


def test_multiview_ntxent_loss_rejects_float_ids():
    z, ids = _views(n_units=3, n_views=2)
    with pytest.raises(ValueError, match="ids must be an integer tensor"):
        MultiViewNTXentLoss()(z, ids.double())


def test_multiview_ntxent_loss_rejects_non_2d_z():
    with pytest.raises(ValueError, match=r"z must be a 2-d tensor.*\(6, 2, 2\)"):
        MultiViewNTXentLoss()(torch.randn(6, 2, 2), torch.arange(3).repeat(2))


def test_multiview_ntxent_loss_rejects_singleton_ids():
    z, _ = _views(n_units=1, n_views=5)
    ids = torch.tensor([0, 0, 1, 2, 2])
    with pytest.raises(ValueError, match="1 of 3 ids occur in a single row"):
        MultiViewNTXentLoss()(z, ids)
