import pytest
import torch

from dm_search.training import models

SHAPES = {"mlp": (1, 40), "cnn1d": (1, 40)}


@pytest.mark.parametrize("name", models.names())
def test_every_model_builds_and_classifies(name):
    shape = SHAPES.get(name, (3, 32, 32))
    torch.manual_seed(0)
    model = models.create_model(name, shape, 7)
    x = torch.randn(2, *shape)
    out = model(x)
    assert out.shape == (2, 7)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.parametrize(("name", "blocks"), [("resnet20", 9), ("resnet44", 21),
                                              ("resnet56", 27), ("resnet110", 54)])
def test_cifar_resnet_depths(name, blocks):
    model = models.create_model(name, (3, 32, 32), 10)
    assert len(model.blocks) == blocks
    convs = sum(1 for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    assert convs + 1 == int(name[6:])  # depth = convolutions + the linear head


def test_models_accept_their_options_and_refuse_others():
    assert models.create_model("mlp", (5,), 3, width=8, depth=1)[1].out_features == 8
    with pytest.raises(ValueError, match=r"unknown option\(s\) widht; it accepts: width, depth"):
        models.create_model("mlp", (5,), 3, widht=8)
    with pytest.raises(ValueError, match="Known models: cnn1d, cnn2d, mlp"):
        models.create_model("vgg", (3, 32, 32), 10)
    with pytest.raises(ValueError, match=r"needs \(channels, height, width\) inputs"):
        models.create_model("resnet20", (1, 40), 10)


def test_grayscale_inputs_work_for_image_models():
    for name in ("cnn2d", "resnet20", "resnet18"):
        model = models.create_model(name, (1, 28, 28), 10)
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
