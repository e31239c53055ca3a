"""torchvision-format weights into gnj models: a minimal torchvision-shaped ResNet-18 and
MobileNetV2 written here in PyTorch, randomly initialised (running statistics too), saved as a
``.pth``, loaded into the gnj model; the eval-mode logits must agree."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from gnj import models  # noqa: E402
from gnj.interop import torchvision as pretrained  # noqa: E402

# ----------------------------------------------------------------------------- torch models


class BasicBlock(nn.Module):
    def __init__(self, inp, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(inp, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inp != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inp, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        y = torch.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x if self.downsample is None else self.downsample(x)
        return torch.relu(y + s)


class ResNet18(nn.Module):
    def __init__(self, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = 64
        for i, planes in enumerate((64, 128, 256, 512)):
            blocks = [BasicBlock(inp, planes, 1 if i == 0 else 2), BasicBlock(planes, planes, 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inp = planes
        self.fc = nn.Linear(512, num_classes)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(x.mean((2, 3)))


def make_divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_relu(inp, out, k, stride, groups=1):
    return nn.Sequential(nn.Conv2d(inp, out, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(out), nn.ReLU6())


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, t):
        super().__init__()
        hidden = int(round(inp * t))
        self.use_res = stride == 1 and inp == oup
        layers = [conv_bn_relu(inp, hidden, 1, 1)] if t != 1 else []
        layers += [conv_bn_relu(hidden, hidden, 3, stride, groups=hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes, width_mult, setting):
        super().__init__()
        inp = make_divisible(32 * width_mult)
        last = make_divisible(1280 * max(1.0, width_mult))
        feats = [conv_bn_relu(3, inp, 3, 2)]
        for t, c, n, s in setting:
            out = make_divisible(c * width_mult)
            for i in range(n):
                feats.append(InvertedResidual(inp, out, s if i == 0 else 1, t))
                inp = out
        feats.append(conv_bn_relu(inp, last, 1, 1))
        self.features = nn.Sequential(*feats)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean((2, 3)))


def randomise(model, seed):
    """Random weights and running statistics (so a wrong mapping cannot go unnoticed)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(1 + 0.2 * torch.randn(m.weight.shape, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=g))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=g))
            elif isinstance(m, nn.Linear):
                m.bias.copy_(0.1 * torch.randn(m.bias.shape, generator=g))
    return model.eval()


def _compare(torch_model, gnj_cfg, shape, tmp_path, atol):
    x = np.random.default_rng(0).normal(size=shape).astype(np.float32)  # NCHW
    path = str(tmp_path / "weights.pth")
    torch.save(torch_model.state_dict(), path)
    with torch.no_grad():
        want = torch_model(torch.from_numpy(x)).numpy()
    model = models.build(ml_collections.ConfigDict(gnj_cfg), want.shape[1])
    xh = jnp.asarray(x.transpose(0, 2, 3, 1))
    variables = model.init({"params": jax.random.PRNGKey(0), "dropout": jax.random.PRNGKey(1)},
                           xh, train=False)
    loaded = pretrained.load_into_variables(variables, path, gnj_cfg["name"])
    with jax.default_matmul_precision("highest"):
        got = np.asarray(model.apply(loaded, xh, train=False))
        before = np.asarray(model.apply(variables, xh, train=False))
    assert np.abs(before - want).max() > 10 * atol  # the random init is far from the weights
    np.testing.assert_allclose(got, want, atol=atol, rtol=1e-4)


def test_resnet18_torchvision_weights_give_the_same_logits(tmp_path):
    torch.manual_seed(0)
    _compare(randomise(ResNet18(7), 1), dict(name="resnet18"), (2, 3, 32, 32), tmp_path, 2e-4)


SETTING = ((1, 8, 1, 1), (6, 8, 2, 2), (6, 16, 1, 2))


def test_mobilenet_v2_torchvision_weights_give_the_same_logits(tmp_path):
    if "mobilenet_v2" not in models.MODELS:
        pytest.skip("mobilenet_v2 is not registered")
    torch.manual_seed(0)
    tm = randomise(MobileNetV2(5, 0.25, SETTING), 2)
    _compare(tm, dict(name="mobilenet_v2", width_mult=0.25, inverted_residual_setting=SETTING),
             (2, 3, 32, 32), tmp_path, 2e-4)


def test_mismatched_architecture_is_refused_with_a_list(tmp_path):
    sd = ResNet18(7).state_dict()
    sd.pop("layer4.1.conv2.weight")
    sd["extra.weight"] = torch.zeros(3)
    model = models.build(ml_collections.ConfigDict(dict(name="resnet18")), 7)
    variables = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)), train=False)
    with pytest.raises(ValueError, match=r"layer4_1/conv2/kernel.*\n.*extra\.weight"):
        pretrained.load_into_variables(variables, sd, "resnet18")
    with pytest.raises(ValueError, match="no torchvision name map.*resnet_cifar"):
        pretrained.kind_of("resnet_cifar")


def test_checkpoint_wrappers_and_dataparallel_prefix_are_unwrapped():
    sd = {"module.fc.weight": torch.ones(2, 3), "module.bn1.num_batches_tracked": torch.tensor(3)}
    out = pretrained.to_numpy({"state_dict": sd, "epoch": 3})
    assert list(out) == ["fc.weight"] and out["fc.weight"].shape == (2, 3)


def test_apply_to_state_through_a_config(tmp_path):
    """The train-loop hook: a TrainState initialised from config.pretrained."""
    from configs.online_norm import imagenet
    from gnj import optim, train

    c = imagenet.get_config("resnet18,batch,runlocal")
    c.model.cifar_stem = False
    tm = randomise(ResNet18(10), 3)
    path = str(tmp_path / "r18.pth")
    torch.save(tm.state_dict(), path)
    c.pretrained = path
    model = models.build(c.model, 10)
    tx, _ = optim.build(c.optim, 10, 100)
    state = train.init_state(model, tx, (32, 32, 3), 0)
    new = pretrained.apply_to_state(state, c)
    np.testing.assert_array_equal(np.asarray(new.params["fc"]["bias"]), tm.fc.bias.detach())
    np.testing.assert_array_equal(np.asarray(new.model_state["batch_stats"]["bn1"]["var"]),
                                  tm.bn1.running_var)
    assert int(new.step) == 0
