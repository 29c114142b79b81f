from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from twinsearch.encoder.losses import (
    ContrastiveLoss,
    NormSoftmaxLoss,
    PrototypicalLoss,
    TripletLoss,
    pairwise_distances,
)


def _clustered(separated: bool, n_classes: int = 4, k: int = 3, dim: int = 8):
    torch.manual_seed(0)
    centers = F.normalize(torch.randn(n_classes, dim), dim=1)
    labels = torch.arange(n_classes).repeat_interleave(k)
    noise = 0.01 if separated else 3.0
    emb = F.normalize(centers[labels] + noise * torch.randn(len(labels), dim), dim=1)
    return emb, labels


def test_pairwise_distances_match_cdist():
    x, y = torch.randn(5, 3), torch.randn(4, 3)
    assert torch.allclose(pairwise_distances(x, y), torch.cdist(x, y), atol=1e-4)


@pytest.mark.parametrize("loss", [
    ContrastiveLoss(margin=1.0), TripletLoss(0.2, "batch_hard"), TripletLoss(0.2, "semi_hard"),
    TripletLoss(0.2, "all"), PrototypicalLoss(shot=1), NormSoftmaxLoss(4, 8, scale=16),
])
def test_losses_prefer_separated_embeddings_and_give_gradients(loss):
    good, labels = _clustered(True)
    bad, _ = _clustered(False)
    if isinstance(loss, NormSoftmaxLoss):
        with torch.no_grad():
            loss.proxies.copy_(good[::3])
    assert loss(good, labels) < loss(bad, labels)
    bad.requires_grad_(True)
    loss(bad, labels).backward()
    assert bad.grad is not None and torch.isfinite(bad.grad).all()


def test_triplet_batch_hard_value():
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    # anchor 0: hardest positive d=sqrt2, hardest negative d=0 -> sqrt2 + 0.2; anchor 1: sqrt2 - sqrt2 + 0.2
    # anchors 2, 3: positive 0, negative 0 -> 0.2
    expected = ((2 ** 0.5 + 0.2) + 0.2 + 0.2 + 0.2) / 4
    assert TripletLoss(0.2, "batch_hard")(emb, labels).item() == pytest.approx(expected, abs=1e-4)


def test_contrastive_given_pairs():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])  # pair 0 same (d 0), pair 1 same (d sqrt2)
    loss = ContrastiveLoss(margin=1.0, pairs="given")(torch.cat([a, b]), labels)
    assert loss.item() == pytest.approx((0 + 2.0) / 2, abs=1e-4)


def test_losses_check_shapes():
    with pytest.raises(ValueError):
        TripletLoss()(torch.zeros(4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        TripletLoss()(torch.zeros(4, 2), torch.zeros(3, dtype=torch.long))
