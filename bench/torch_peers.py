"""PyTorch peers of the benchmarked gnj models and layers (written here, no torchvision)."""

from __future__ import annotations

import torch
import torch.nn as tnn
import torch.nn.functional as F


class TorchBlock(tnn.Module):
    """CIFAR basic block with the option-A shortcut (as gnj's resnet_cifar, shortcut='A')."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = tnn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = tnn.BatchNorm2d(cout)
        self.conv2 = tnn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = tnn.BatchNorm2d(cout)
        self.stride, self.extra = stride, cout - cin

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        s = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra:
            s = F.pad(s, (0, 0, 0, 0, 0, self.extra))
        return F.relu(y + s)


class TorchResNetCifar(tnn.Module):
    def __init__(self, depth: int = 20, width: int = 16, num_classes: int = 10):
        super().__init__()
        n = (depth - 2) // 6
        self.stem = tnn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn = tnn.BatchNorm2d(width)
        blocks, cin = [], width
        for stage in range(3):
            for i in range(n):
                cout = width * 2**stage
                blocks.append(TorchBlock(cin, cout, 2 if stage > 0 and i == 0 else 1))
                cin = cout
        self.blocks = tnn.Sequential(*blocks)
        self.head = tnn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.blocks(F.relu(self.bn(self.stem(x))))
        return self.head(x.mean((2, 3)))


def torch_train_step(model, opt):
    def step(x, y):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    return step


def online_norm_per_sample(x, g, af, ab, eps=1e-5):
    """The reference's per-sample Online Norm forward and control-process backward (NCHW)."""
    n, c = x.shape[0], x.shape[1]
    mu, var = torch.zeros(c), torch.ones(c)
    u, v = torch.zeros(c), torch.zeros(c)
    ys, ss = [], []
    for t in range(n):
        s = torch.sqrt(var + eps)
        xt = x[t].reshape(c, -1)
        y = (xt - mu[:, None]) / s[:, None]
        ys.append(y)
        ss.append(s)
        mx, vx = xt.mean(1), xt.var(1, unbiased=False)
        d = mx - mu
        var = af * var + (1 - af) * vx + af * (1 - af) * d * d
        mu = mu + (1 - af) * d
    dx = []
    for t in range(n):
        gt = g[t].reshape(c, -1) - (1 - ab) * v[:, None] * ys[t]
        v = v + (gt * ys[t]).mean(1)
        gh = gt / ss[t][:, None]
        xp = gh - (1 - ab) * u[:, None]
        u = u + xp.mean(1)
        dx.append(xp)
    return torch.stack(ys), torch.stack(dx)


def ldi_per_sample(weights, pres, dphi):
    """LDI with a per-sample, per-layer torch.linalg.svd loop (how the reference computes it)."""
    svs = []
    n = pres[0].shape[0]
    for i in range(n):
        for j, w in enumerate(weights):
            if j == 0:
                jac = torch.diag(dphi(pres[0][i])) @ w
            elif j == 1:
                jac = w
            else:
                jac = w @ torch.diag(dphi(pres[j][i]))
            svs.append(torch.linalg.svd(jac).S)
    s = torch.cat(svs)
    return s.mean(), s.std()
