from __future__ import annotations

import pytest
import torch

from twinsearch.encoder.backbones import BACKBONES, build_backbone
from twinsearch.encoder.heads import build_net


@pytest.mark.parametrize("name,args,shape", [
    ("conv4", {"input_size": 28}, (1, 28, 28)),
    ("conv4", {"input_size": 56, "widths": [16, 32, 64], "pool": "avg"}, (1, 56, 56)),
    ("conv4", {"input_size": 28, "widths": [8, 16, 32], "convs_per_block": [1, 2, 2]}, (1, 28, 28)),
    ("conv4", {"input_size": 24, "input_width": 48, "widths": [8, 16]}, (1, 24, 48)),
    ("koch", {"input_size": 105}, (1, 105, 105)),
    ("signet", {"input_size": 155, "input_width": 220}, (1, 155, 220)),
    ("resnet", {"input_size": 64}, (3, 64, 64)),
])
def test_backbones_build_and_embed(name, args, shape):
    in_channels = shape[0]
    backbone = build_backbone(name, in_channels=in_channels, **args)
    feats = backbone.eval()(torch.zeros(2, *shape))
    assert feats.shape == (2, backbone.out_features)
    net = build_net({"backbone": name, "backbone_args": {"in_channels": in_channels, **args}, "dim": 32}).eval()
    with torch.no_grad():
        emb = net(torch.rand(2, *shape))
    assert emb.shape == (2, 32) and torch.allclose(emb.norm(dim=1), torch.ones(2), atol=1e-5)


def test_conv4_flattens_wide_inputs_by_their_own_shape():
    wide = build_backbone("conv4", input_size=24, input_width=48, widths=[8, 16])
    assert wide.out_features == 16 * 6 * 12
    assert build_backbone("conv4", input_size=24, widths=[8, 16]).out_features == 16 * 6 * 6
    with pytest.raises(ValueError, match="too small"):
        build_backbone("conv4", input_size=24, input_width=2, widths=[8, 16])


def test_unknown_backbone():
    with pytest.raises(ValueError, match="unknown backbone"):
        build_backbone("vgg")
    assert set(BACKBONES) == {"conv4", "koch", "signet", "resnet"}


def test_convs_per_block_adds_depth_not_resolution():
    one = build_backbone("conv4", input_size=28, widths=[8, 16])
    two = build_backbone("conv4", input_size=28, widths=[8, 16], convs_per_block=2)
    count = lambda net: sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())  # noqa: E731
    assert (count(one), count(two)) == (2, 4) and one.out_features == two.out_features == 16 * 7 * 7
    # one conv per block keeps the parameter names of earlier model files
    assert list(build_backbone("conv4", convs_per_block=1).state_dict()) == list(build_backbone("conv4").state_dict())
    with pytest.raises(ValueError, match="convs_per_block"):
        build_backbone("conv4", widths=[8, 16], convs_per_block=[1, 2, 3])
    with pytest.raises(ValueError, match="convs_per_block"):
        build_backbone("conv4", widths=[8, 16], convs_per_block=0)


def test_tta_is_one_embedding_at_evaluation_only():
    arch = {"backbone": "conv4", "backbone_args": {"input_size": 16, "widths": [4, 4]}, "dim": 8,
            "tta_shifts": [[1, 0], [0, 1]]}
    torch.manual_seed(0)
    net = build_net(arch)
    x = torch.rand(3, 1, 16, 16)
    net.eval()
    with torch.no_grad():
        averaged = net(x)
        net.tta_shifts = []
        plain = net(x)
    assert averaged.shape == plain.shape == (3, 8) and not torch.allclose(averaged, plain)


def test_tta_flip_makes_mirror_images_embed_alike():
    arch = {"backbone": "conv4", "backbone_args": {"input_size": 16, "widths": [4, 4]}, "dim": 8, "tta_flip": True}
    torch.manual_seed(0)
    net = build_net(arch).eval()
    x = torch.rand(3, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(net(x), net(x.flip(3)), atol=1e-6)
        net.tta_flip = False
        assert not torch.allclose(net(x), net(x.flip(3)), atol=1e-3)


def test_resnet_stem_stride_quarters_the_first_stage():
    from twinsearch.encoder.backbones import SmallResNet

    x = torch.rand(2, 3, 32, 32)
    plain, strided = SmallResNet(3, (8, 16), input_size=32), SmallResNet(3, (8, 16), input_size=32, stem_stride=2)
    assert plain(x).shape == strided(x).shape == (2, 16)
    assert strided.stem(x).shape[-1] == 16 and plain.stem(x).shape[-1] == 32
    with pytest.raises(ValueError):
        SmallResNet(3, (8, 16), stem_stride=3)
