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


class TorchVGG(tnn.Module):
    """gnj ``vgg``: per cfg entry conv3×3 (stride 1 or 2, no bias) → BN → ReLU; pool, Linear."""

    def __init__(self, cfg: tuple, num_classes: int = 10):
        super().__init__()
        layers, cin = [], 3
        for c in cfg:
            width, stride = c if isinstance(c, tuple) else (c, 1)
            layers += [tnn.Conv2d(cin, width, 3, stride, 1, bias=False), tnn.BatchNorm2d(width),
                       tnn.ReLU(inplace=True)]
            cin = width
        self.features = tnn.Sequential(*layers)
        self.head = tnn.Linear(cin, num_classes)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


class TorchDenseMLP(tnn.Module):
    """gnj ``dense_mlp`` from its ``structure()`` rows (same layer sizes, links and φ = ELU)."""

    def __init__(self, rows: list[dict]):
        super().__init__()
        self.rows = rows
        self.layers = tnn.ModuleList(tnn.Linear(r["inp"], r["out"]) for r in rows)
        self.links = [None if r["links"] is None else torch.as_tensor(r["links"]) for r in rows]

    def forward(self, x):
        x = x.flatten(1)
        outs = [F.elu(self.layers[0](x))]
        outs.append(self.layers[1](outs[0]))
        for j in range(2, len(self.rows)):
            pool = torch.cat(outs[j - 2::-1], dim=1)
            inp = torch.cat([outs[j - 1], pool[:, self.links[j]]], dim=1)
            outs.append(self.layers[j](F.elu(inp) if self.rows[j]["act_in"] else inp))
        return outs[-1]


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


def ldi_per_sample_layers(layers, dphi):
    """LDI with a per-sample, per-layer ``torch.linalg.svd`` loop (how the reference computes it).

    ``layers``: (weight (out, in), pre_in (N, in) or None, pre_out (N, out) or None) per layer;
    J = diag(φ′(pre_out))·W·diag(φ′(pre_in)) for each sample. Returns (mean, std) of all
    singular values (population std, as jnp.std).
    """
    n = next(p.shape[0] for layer in layers for p in layer[1:] if p is not None)
    svs = []
    for i in range(n):
        for w, pre_in, pre_out in layers:
            jac = w
            if pre_in is not None:
                jac = jac * dphi(pre_in[i])[None, :]
            if pre_out is not None:
                jac = dphi(pre_out[i])[:, None] * jac
            svs.append(torch.linalg.svd(jac).S)
    s = torch.cat(svs)
    return s.mean(), s.std(unbiased=False)
