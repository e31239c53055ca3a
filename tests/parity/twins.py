"""PyTorch twins of the reference models, written for the parity harness from the references'
behaviour (module names and layouts as in the reference code, so its state dicts go through
``gnj.interop.convert``; in-place operations kept where they alias a tensor that is read again).

Each twin generalises the reference only where a tiny size needs it (widths, number of cells,
classes); docs/parity.md lists what each reproduces.
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

# ------------------------------------------------------------------ BeyondSigProp (ConstNet)


class ConstBlock(nn.Module):
    """WRN single-conv block. The ReLU is in place: with a projection, ``conv_res`` then reads the
    overwritten tensor, ReLU(x̂), as in the reference."""

    def __init__(self, cin: int, cout: int, stride: int, use_bn: bool):
        super().__init__()
        self.use_bn = use_bn
        self.bn = nn.BatchNorm2d(cin)
        self.relu = nn.ReLU(inplace=True)
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.equal = cin == cout
        self.conv_res = None if self.equal else nn.Conv2d(cin, cout, 1, stride, 0, bias=False)
        self.scale = nn.Parameter(torch.ones(1))
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(1)) for _ in range(2)])

    def forward(self, x):
        if self.use_bn:
            xh = self.bn(x)
            out = self.conv(self.relu(xh))
        else:
            xh = x + self.biases[0]
            out = self.scale * (self.conv(self.relu(xh)) + self.biases[1])
        return torch.add(x, out) if self.equal else torch.add(self.conv_res(xh), out)


class ConstStage(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int, use_bn: bool):
        super().__init__()
        self.layer = nn.Sequential(*[ConstBlock(cin if i == 0 else cout, cout,
                                                stride if i == 0 else 1, use_bn)
                                     for i in range(n)])

    def forward(self, x):
        self.layer(x)  # the reference evaluates its stage twice and keeps the second result
        return self.layer(x)


class WideResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, widen: int, use_bn: bool):
        super().__init__()
        n, ch = (depth - 4) // 3, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = ConstStage(n, ch[0], ch[1], 1, use_bn)
        self.block2 = ConstStage(n, ch[1], ch[2], 2, use_bn)
        self.block3 = ConstStage(n, ch[2], ch[3], 2, use_bn)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        return self.fc(F.avg_pool2d(self.relu(out), 8).flatten(1))


class LeakyBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, index: int, lrelu: float):
        super().__init__()
        self.phase = -1 if index % 2 else 1
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True) if lrelu == 0 else nn.LeakyReLU(lrelu)
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.biases = nn.ParameterList([nn.Parameter(torch.zeros(1)) for _ in range(2)])

    def forward(self, x):
        out = self.relu(self.conv(x + self.biases[0]))
        return self.bn(out) if self.phase < 0 else out


class LeakyStage(nn.Module):
    def __init__(self, n, cin, cout, stride, pos, lrelu):
        super().__init__()
        self.layer = nn.Sequential(*[LeakyBlock(cin if i == 0 else cout, cout,
                                                stride if i == 0 else 1, i + pos, lrelu)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class LRNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, widen: int, lrelu: float):
        super().__init__()
        n, ch = (depth - 4) // 3, [16, 16 * widen, 32 * widen, 64 * widen]
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.block1 = LeakyStage(n, ch[0], ch[1], 1, 0, lrelu)
        self.block2 = LeakyStage(n, ch[1], ch[2], 2, n, lrelu)
        self.block3 = LeakyStage(n, ch[2], ch[3], 2, 2 * n, lrelu)
        self.relu = nn.ReLU(inplace=True) if lrelu == 0 else nn.LeakyReLU(lrelu)
        self.fc = nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = self.relu(self.block3(self.block2(self.block1(self.conv1(x)))))
        return self.fc(F.avg_pool2d(out, 8).flatten(1))


# ------------------------------------------------------------------------------- NN_Mass


def reference_links(paths_links, seed):
    """random.seed(seed), then random.sample per layer in order (the reference's add_link)."""
    random.seed(seed)
    return [random.sample(list(range(p)), k) for p, k in paths_links]


class ConvDepth(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv0 = nn.Conv2d(cin, cout, 1, 1, 0, bias=False)
        self.batch0 = nn.BatchNorm2d(cout)
        self.conv1 = nn.Conv2d(cout, cout, 3, stride, 1, groups=cout, bias=False)
        self.batch1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 1, 1, 0, bias=False)
        self.batch2 = nn.BatchNorm2d(cout)

    def forward(self, x):
        out = F.relu(self.batch0(self.conv0(x)))
        out = F.relu(self.batch1(self.conv1(out)))
        return self.batch2(self.conv2(out))


class DenseCNN(nn.Module):
    """regular_dense_cnn / depth_wise_dense_cnn with ``num_cells`` cells and any input size."""

    def __init__(self, cell_depth, widths, tcs, num_classes, depthwise, final_hw, seed=2):
        super().__init__()
        self.d, self.widths = cell_depth, widths
        paths = [[(max(j - 1, 0)) * w for j in range(cell_depth)] for w in widths]
        self.tc = [[min(t, p) for p in ps] for t, ps in zip(tcs, paths)]
        flat = reference_links([(p, k) for ps, ks in zip(paths, self.tc)
                                for p, k in zip(ps, ks)], seed)
        self.links = [flat[k * cell_depth:(k + 1) * cell_depth] for k in range(len(widths))]
        layers, norms, cin = [], [], 3
        for k, w in enumerate(widths):
            for j in range(cell_depth):
                fan = (cin if j == 0 else w) + self.tc[k][j]
                if depthwise and (k > 0 or j > 0):
                    layers.append(ConvDepth(fan, w, 2 if (j == 0 and k > 0) else 1))
                else:
                    layers.append(nn.Conv2d(fan, w, 3, 2 if (j == 0 and k > 0) else 1, 1,
                                            bias=False))
                norms.append(nn.BatchNorm2d(w + self.tc[k][j]))
                cin = w
        self.layer_list = nn.ModuleList(layers)
        self.norm_list = nn.ModuleList(norms)
        self.avg_pool = nn.AvgPool2d(2)
        self.fc_layer = nn.Linear(widths[-1] * (final_hw // 2) ** 2, num_classes)

    def forward(self, x):
        out = x
        for k in range(len(self.widths)):
            b = k * self.d
            out0 = self.norm_list[b](self.layer_list[b](out))
            out1 = self.norm_list[b + 1](self.layer_list[b + 1](F.relu(out0)))
            out, feat = out1, torch.cat((out1, out0), 1)
            for j in range(2, self.d):
                idx = torch.tensor(self.links[k][j], dtype=torch.long)
                inp = torch.cat((out, feat[:, idx]), 1)
                out = self.layer_list[b + j](F.relu(self.norm_list[b + j](inp)))
                feat = torch.cat((out, feat), 1)
        return self.fc_layer(torch.flatten(self.avg_pool(out), 1))


class DenseMLP(nn.Module):
    """Dense_MLP (ELU), links drawn after random.seed(seed); its unused BatchNorm1d list kept."""

    def __init__(self, width, depth, tc, input_dims, num_classes, seed):
        super().__init__()
        paths = [max(j - 1, 0) * width for j in range(depth)]
        self.tc = [min(tc, p) for p in paths]
        fans = [input_dims] + [width + self.tc[j] for j in range(1, depth)]
        outs = [width] * (depth - 1) + [num_classes]
        self.features = nn.ModuleList([nn.Linear(f, o) for f, o in zip(fans, outs)])
        self.batchnorm = nn.ModuleList([nn.BatchNorm1d(width + t) for t in self.tc[:-1]])
        self.links = reference_links(list(zip(paths, self.tc)), seed)
        self.depth = depth

    def forward(self, x):
        x = x.flatten(1)
        o = [F.elu(self.features[0](x))]
        o.append(self.features[1](o[0]))
        feat = [o[0], torch.cat((o[1], o[0]), 1)]
        for j in range(2, self.depth):
            inp = torch.cat((o[j - 1], feat[j - 2][:, torch.tensor(self.links[j])]), 1)
            out = self.features[j](inp if j == self.depth - 1 else F.elu(inp))
            feat.append(torch.cat((out, feat[j - 1]), 1))
            o.append(out)
        return o[-1]


# --------------------------------------------------------------------------- Beyond BatchNorm


class BNSelf(nn.Module):
    """BN_self: batch statistics (biased), running stats kept with 0.9, moving mean init 1."""

    def __init__(self, c):
        super().__init__()
        shape = (1, c, 1, 1)
        self.gamma, self.beta = nn.Parameter(torch.ones(shape)), nn.Parameter(torch.zeros(shape))
        self.register_buffer("moving_mean", torch.ones(shape))
        self.register_buffer("moving_var", torch.ones(shape))

    def forward(self, x):
        if self.training:
            var, mean = torch.var_mean(x, dim=(0, 2, 3), keepdim=True, unbiased=False)
            with torch.no_grad():
                self.moving_mean.mul_(0.9).add_(0.1 * mean)
                self.moving_var.mul_(0.9).add_(0.1 * var)
        else:
            var, mean = self.moving_var, self.moving_mean
        return (x - mean) * torch.rsqrt(var + 1e-5) * self.gamma + self.beta


class FRNSelf(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, c, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.eps = nn.Parameter(torch.full((1,), 1e-5))

    def forward(self, x):
        nu2 = x.pow(2).mean(dim=[2, 3], keepdim=True)
        return self.gamma * (x * torch.rsqrt(nu2 + self.eps.abs())) + self.beta


class TLU(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tau = nn.Parameter(torch.zeros(1, c, 1, 1))

    def forward(self, x):
        return torch.max(x, self.tau)


class Probe(nn.Module):
    """Conv_prober / Activs_prober as the network sees them while training: an identity whose
    forward returns a copy (its statistics are not needed here)."""

    def forward(self, x):
        return x.clone()


def norm_and_act(norm: str, c: int) -> list[nn.Module]:
    if norm == "frn":
        return [FRNSelf(c), TLU(c)]
    if norm == "plain":
        return [nn.Identity(), nn.ReLU(inplace=True)]
    return [BNSelf(c), nn.ReLU(inplace=True)]


class LubanaVGG(nn.Module):
    def __init__(self, cfg, norm, num_classes):
        super().__init__()
        layers, cin = [], 3
        for c in cfg:
            width, stride = c if isinstance(c, tuple) else (c, 1)
            layers += [nn.Conv2d(cin, width, 3, stride, 1, bias=False), Probe(),
                       *norm_and_act(norm, width), Probe()]
            cin = width
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


class LubanaBlock(nn.Module):
    def __init__(self, cin, planes, stride, norm, skipinit):
        super().__init__()
        self.skip_gain = nn.Parameter(torch.zeros(1)) if skipinit else 1
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.norm1, self.activ1 = norm_and_act(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.norm2, self.activ2 = norm_and_act(norm, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, planes, 3, stride, 1, bias=False),
                                          Probe(), norm_and_act(norm, planes)[0])
        self.conv_probe1, self.norm_probe1 = Probe(), Probe()
        self.conv_probe2, self.norm_probe2 = Probe(), Probe()

    def forward(self, x):
        out = self.norm_probe1(self.activ1(self.norm1(self.conv_probe1(self.conv1(x)))))
        out = self.skip_gain * self.norm2(self.conv_probe2(self.conv2(out)))
        out += self.shortcut(x)
        return self.norm_probe2(self.activ2(out))


class LubanaPreactBlock(nn.Module):
    def __init__(self, cin, planes, stride, norm, skipinit):
        super().__init__()
        self.skip_gain = nn.Parameter(torch.zeros(1)) if skipinit else 1
        self.norm1, self.activ1 = norm_and_act(norm, cin)
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.norm2, self.activ2 = norm_and_act(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = nn.Sequential()
        if stride != 1:  # the reference's channel test never fires
            self.shortcut = nn.Sequential(norm_and_act(norm, cin)[0],
                                          nn.Conv2d(cin, planes, 3, stride, 1, bias=False),
                                          Probe())
        self.conv_probe1, self.norm_probe1 = Probe(), Probe()
        self.conv_probe2, self.norm_probe2 = Probe(), Probe()

    def forward(self, x):
        # with an identity norm, the in-place activation overwrites x itself before the
        # shortcut reads it
        out = self.conv_probe1(self.conv1(self.norm_probe1(self.activ1(self.norm1(x)))))
        out = self.activ2(self.norm2(out))
        out = self.skip_gain * self.conv_probe2(self.conv2(out))
        out += self.shortcut(x)
        return self.norm_probe2(out)


class LubanaResNet(nn.Module):
    def __init__(self, depth, width, norm, num_classes, preact, skipinit):
        super().__init__()
        n, block = (depth - 2) // 6, LubanaPreactBlock if preact else LubanaBlock
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.conv_probe1 = Probe()
        self.norm1, self.activ1 = norm_and_act(norm, width)
        self.norm_probe1 = Probe()
        cin, stages = width, []
        for s, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for i in range(n):
                blocks.append(block(cin, planes, 2 if (s > 0 and i == 0) else 1, norm, skipinit))
                cin = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = self.norm_probe1(self.activ1(self.norm1(self.conv_probe1(self.conv1(x)))))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(F.avg_pool2d(out, out.size()[3]).flatten(1))


# ----------------------------------------------------------------------------------- GNEDNN


class GneBlock(nn.Module):
    """cifar/models/resnet.py BasicBlock with a norm (option-A shortcut: 1×1 average pool with
    the stride, then zero channels) or serial_net.py's block (no shortcut, act at the end)."""

    def __init__(self, cin, planes, stride, residual):
        super().__init__()
        self.residual = residual
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.norm1, self.norm2 = nn.BatchNorm2d(planes), nn.BatchNorm2d(planes)
        self.downsample = nn.AvgPool2d(1, stride=stride) if (stride != 1 or cin != planes) else None

    def forward(self, x):
        out = self.norm2(self.conv2(F.relu(self.norm1(self.conv1(x)))))
        if not self.residual:
            return F.relu(out)
        identity = x
        if self.downsample is not None:
            identity = self.downsample(x)
            identity = torch.cat((identity, torch.zeros_like(identity)), 1)
        out += identity
        return F.relu(out)


class GneResNet(nn.Module):
    def __init__(self, depth, width, num_classes, residual=True):
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.norm1 = nn.BatchNorm2d(width)
        cin, stages = width, []
        for s, planes in enumerate((width, 2 * width, 4 * width)):
            stages.append(nn.Sequential(*[GneBlock(cin if i == 0 else planes, planes,
                                                   2 if (s > 0 and i == 0) else 1, residual)
                                          for i in range(n)]))
            cin = planes
        self.layer1, self.layer2, self.layer3 = stages
        if residual:
            self.bias2 = nn.Parameter(torch.zeros(1))  # used only in the bns mode
        self.linear = nn.Linear(cin, num_classes)

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        return self.linear(out.mean(dim=(2, 3)))


class GneBottleneck(nn.Module):
    """cifar/models/densenet.py Bottleneck: its activation module is applied to the block input
    itself when there is no norm (in place for relu, leaky_relu); the input is then concatenated."""

    def __init__(self, cin, growth, use_norm, acf):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, 4 * growth, 1, bias=not use_norm)
        self.conv2 = nn.Conv2d(4 * growth, growth, 3, padding=1, bias=not use_norm)
        if use_norm:
            self.norm1, self.norm2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(4 * growth)
            layers = [self.norm1, acf, self.conv1, self.norm2, acf, self.conv2]
        else:
            layers = [acf, self.conv1, acf, self.conv2]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return torch.cat([self.block(x), x], 1)


class GneTransition(nn.Module):
    def __init__(self, cin, cout, use_norm, acf):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, stride=2, padding=1, bias=not use_norm)
        if use_norm:
            self.norm = nn.BatchNorm2d(cin)
        self.block = nn.Sequential(*([self.norm] if use_norm else []), acf, self.conv)

    def forward(self, x):
        return self.block(x)


class GneDenseNet(nn.Module):
    def __init__(self, growth, blocks, use_norm, acf, num_classes):
        super().__init__()
        self.use_norm, self.acf = use_norm, acf
        planes = 2 * growth
        self.conv1 = nn.Conv2d(3, planes, 3, padding=1, bias=not use_norm)
        for s, n in enumerate(blocks):
            layers = []
            for _ in range(n):
                layers.append(GneBottleneck(planes, growth, use_norm, acf))
                planes += growth
            setattr(self, f"dense{s + 1}", nn.Sequential(*layers))
            if s < len(blocks) - 1:
                out = planes // 2
                setattr(self, f"trans{s + 1}", GneTransition(planes, out, use_norm, acf))
                planes = out
        self.n_stages = len(blocks)
        if use_norm:
            self.norm_last = nn.BatchNorm2d(planes)
        self.linear = nn.Linear(planes, num_classes)

    def forward(self, x):
        out = self.conv1(x)
        for s in range(1, self.n_stages + 1):
            out = getattr(self, f"dense{s}")(out)
            if s < self.n_stages:
                out = getattr(self, f"trans{s}")(out)
        out = self.acf(self.norm_last(out) if self.use_norm else out)
        return self.linear(F.avg_pool2d(out, 8).flatten(1))


class FixupBasic(nn.Module):
    """imagenet/models/fixup_resnet.py FixupBasicBlock."""

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.bias1a, self.bias1b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.bias2a, self.bias2b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.scale = nn.Parameter(torch.ones(1))
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Conv2d(cin, planes, 1, stride, bias=False)
                           if stride != 1 or cin != planes else None)

    def forward(self, x):
        identity = x
        out = self.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.conv2(out + self.bias2a) * self.scale + self.bias2b
        if self.downsample is not None:
            identity = self.downsample(x + self.bias1a)
        out += identity
        return self.relu(out)


class FixupBottleneck(nn.Module):
    """imagenet/models/fixup_resnet.py FixupBottleneck (stride on the 3×3 conv)."""

    expansion = 4

    def __init__(self, cin, planes, stride):
        super().__init__()
        for name in ("bias1a", "bias1b", "bias2a", "bias2b", "bias3a", "bias3b"):
            setattr(self, name, nn.Parameter(torch.zeros(1)))
        self.scale = nn.Parameter(torch.ones(1))
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Conv2d(cin, planes * 4, 1, stride, bias=False)
                           if stride != 1 or cin != planes * 4 else None)

    def forward(self, x):
        identity = x
        out = self.relu(self.conv1(x + self.bias1a) + self.bias1b)
        out = self.relu(self.conv2(out + self.bias2a) + self.bias2b)
        out = self.conv3(out + self.bias3a) * self.scale + self.bias3b
        if self.downsample is not None:
            identity = self.downsample(x + self.bias1a)
        out += identity
        return self.relu(out)


class FixupResNet18(nn.Module):
    """Fixup ResNet; by default resnet18, else ``block`` per stage ``layers`` (ResNet-50:
    FixupBottleneck, (3, 4, 6, 3))."""

    def __init__(self, num_classes, block=FixupBasic, layers=(2, 2, 2, 2)):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bias1, self.bias2 = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for s, planes in enumerate((64, 128, 256, 512)):
            blocks = []
            for i in range(layers[s]):
                blocks.append(block(cin, planes, 2 if (s > 0 and i == 0) else 1))
                cin = planes * getattr(block, "expansion", 1)
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.conv1(x) + self.bias1))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)) + self.bias2)


class GneMobileNet(nn.Module):
    """imagenet/models/mobilenet.py MobileNet (channels times ``width``; global mean head)."""

    def __init__(self, width, use_norm, num_classes, dense=False):
        super().__init__()
        ch = lambda c: max(1, int(c * width))
        norm = (lambda c: nn.BatchNorm2d(c)) if use_norm else None

        def unit(cin, cout, stride, groups=1, k=3, names=("conv", "norm", "acf")):
            mods = [(names[0], nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups,
                                         bias=not use_norm))]
            if use_norm:
                mods.append((names[1], norm(cout)))
            mods.append((names[2], nn.ReLU(inplace=True)))
            return mods

        plan = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1), (512, 1),
                (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1)]
        blocks, cin = [nn.Sequential(OrderedDict(unit(3, ch(32), 2)))], ch(32)
        for c, s in plan:
            if dense:
                mods = unit(cin, ch(c), s)
            else:
                mods = (unit(cin, cin, s, cin, 3, ("conv_dw", "norm1", "acf1"))
                        + unit(cin, ch(c), 1, 1, 1, ("conv_pw", "norm2", "acf2")))
            blocks.append(nn.Sequential(OrderedDict(mods)))
            cin = ch(c)
        self.model = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.model(x).mean(dim=(2, 3)))


# ------------------------------------------------------------------------------ torchvision


class TvBasic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += identity
        return self.relu(out)


class TvBottleneck(nn.Module):
    """torchvision Bottleneck (v1.5: the stride on the grouped 3×3 conv)."""

    expansion = 4

    def __init__(self, cin, planes, stride, groups=1, base_width=64):
        super().__init__()
        width = int(planes * (base_width / 64.0)) * groups
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=groups, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes * 4, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes * 4))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out += identity
        return self.relu(out)


class TvResNet18(nn.Module):
    """torchvision ResNet; by default resnet18, else ``block`` per stage ``layers`` (ResNet-50:
    TvBottleneck, (3, 4, 6, 3); ResNeXt: groups, width_per_group; Wide: width_per_group 128)."""

    def __init__(self, num_classes, block=TvBasic, layers=(2, 2, 2, 2), groups=1,
                 width_per_group=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        kw = {} if block is TvBasic else dict(groups=groups, base_width=width_per_group)
        for s, planes in enumerate((64, 128, 256, 512)):
            blocks = []
            for i in range(layers[s]):
                blocks.append(block(cin, planes, 2 if (s > 0 and i == 0) else 1, **kw))
                cin = planes * block.expansion
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def make_divisible(v, divisor=8):
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_relu6(cin, cout, k=3, stride=1, groups=1):
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    def __init__(self, inp, oup, stride, t):
        super().__init__()
        hidden = int(round(inp * t))
        self.use_res = stride == 1 and inp == oup
        layers = [conv_bn_relu6(inp, hidden, 1)] if t != 1 else []
        layers += [conv_bn_relu6(hidden, hidden, 3, stride, hidden),
                   nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class TvMobileNetV2(nn.Module):
    """torchvision MobileNetV2 (its classifier dropout left out: p = 0 in the comparison)."""

    def __init__(self, num_classes, width_mult, setting):
        super().__init__()
        cin, last = make_divisible(32 * width_mult), make_divisible(1280 * max(1.0, width_mult))
        features = [conv_bn_relu6(3, cin, stride=2)]
        for t, c, n, s in setting:
            out = make_divisible(c * width_mult)
            for i in range(n):
                features.append(InvertedResidual(cin, out, s if i == 0 else 1, t))
                cin = out
        features.append(conv_bn_relu6(cin, last, 1))
        self.features = nn.Sequential(*features)
        self.classifier = nn.Sequential(nn.Dropout(0.0), nn.Linear(last, num_classes))

    def forward(self, x):
        return self.classifier(self.features(x).mean(dim=(2, 3)))


# --------------------------------------------------------------------- Online Normalization


class _OnlineNormFn(torch.autograd.Function):
    """The reference's Norm2d: per sample t, y_t = (x_t − μ)/√(σ² + eps) with the streams
    before the sample, then μ, σ² updated from the sample's mean and variance over (H, W); the
    backward runs the control process with the streams u, v (numpy_on's norm_backward)."""

    @staticmethod
    def forward(ctx, x, layer):
        mu_x = x.mean(dim=(2, 3))
        var_x = ((x - mu_x[:, :, None, None]) ** 2).mean(dim=(2, 3))
        m, var = layer.m.clone(), layer.var.clone()
        centre, scale = torch.empty_like(mu_x), torch.empty_like(mu_x)
        for t in range(x.shape[0]):
            centre[t], scale[t] = m, torch.sqrt(var + layer.eps)
            var = (layer.afwd * var + (1 - layer.afwd) * var_x[t]
                   + layer.afwd * (1 - layer.afwd) * (mu_x[t] - m) ** 2)
            m = m + (1 - layer.afwd) * (mu_x[t] - m)
        layer.m.copy_(m)
        layer.var.copy_(var)
        out = (x - centre[:, :, None, None]) / scale[:, :, None, None]
        ctx.save_for_backward(out, scale)
        ctx.layer = layer
        return out

    @staticmethod
    def backward(ctx, g):
        out, scale = ctx.saved_tensors
        layer, c = ctx.layer, 1 - ctx.layer.abkw
        u, v = layer.u.clone(), layer.v.clone()
        grad_in = torch.empty_like(g)
        for t in range(g.shape[0]):
            grad = g[t] - c * v[:, None, None] * out[t]
            v = v + (grad * out[t]).mean(dim=(1, 2))
            grad_in[t] = grad / scale[t, :, None, None] - c * u[:, None, None]
            u = u + grad_in[t].mean(dim=(1, 2))
        layer.u.copy_(u)
        layer.v.copy_(v)
        return grad_in, None


class Norm2d(nn.Module):
    def __init__(self, c, afwd, abkw, eps=1e-5):
        super().__init__()
        self.afwd, self.abkw, self.eps = afwd, abkw, eps
        for name, init in (("m", torch.zeros), ("var", torch.ones), ("u", torch.zeros),
                           ("v", torch.zeros)):
            self.register_buffer(name, init(c))

    def forward(self, x):
        if self.training:
            return _OnlineNormFn.apply(x, self)
        return (x - self.m[:, None, None]) / torch.sqrt(self.var[:, None, None] + self.eps)


class OnlineNorm2d(nn.Module):
    """norm → ·weight + bias → layer scaling over (C, H, W) per sample (ecm 'ls')."""

    def __init__(self, c, afwd, abkw):
        super().__init__()
        self.norm = Norm2d(c, afwd, abkw)
        self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))

    def forward(self, x):
        out = self.norm(x) * self.weight[:, None, None] + self.bias[:, None, None]
        return out / torch.sqrt((out * out).mean(dim=(1, 2, 3), keepdim=True) + 1e-5)


class OnBlock(nn.Module):
    def __init__(self, cin, planes, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 3, stride, 1, bias=False)
        self.bn1 = norm(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride, bias=False),
                                            norm(planes))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        out += identity
        return self.relu(out)


class OnlineNormResNet(nn.Module):
    """experiments/resnet ResNet with cifar=True (3×3 stem, no max pool, three stages, 1×1
    conv + norm downsample) and OnlineNorm2d layers."""

    def __init__(self, depth, width, num_classes, afwd, abkw):
        super().__init__()
        norm = lambda c: OnlineNorm2d(c, afwd, abkw)
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        cin = width
        for s, planes in enumerate((width, 2 * width, 4 * width)):
            blocks = []
            for i in range(n):
                blocks.append(OnBlock(cin, planes, 2 if (s > 0 and i == 0) else 1, norm))
                cin = planes
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(x.mean(dim=(2, 3)))


class OnMLPLayer(nn.Module):
    """experiments/mlp MLP_Layer: fc without bias → norm → in-place ReLU (none on the last)."""

    def __init__(self, cin, cout, norm, relu=True):
        super().__init__()
        self.fc = nn.Linear(cin, cout, bias=False)
        self.norm = {"batch": lambda: nn.BatchNorm1d(cout), "layer": lambda: LayerNorm1d(cout),
                     "none": nn.Identity}[norm]()
        self.relu = nn.ReLU(inplace=True) if relu else None

    def forward(self, x):
        x = self.norm(self.fc(x))
        return x if self.relu is None else self.relu(x)


class LayerNorm1d(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(c)), nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return F.layer_norm(x, (x.shape[1],), self.weight, self.bias, 1e-5)


class OnMLP(nn.Module):
    """experiments/mlp MLP_Model (input flattened as the training script's view(-1, 784))."""

    def __init__(self, cin, hidden, num_classes, norm):
        super().__init__()
        self.in_layer = OnMLPLayer(cin, hidden[0], norm)
        self.hidden_layers = nn.Sequential(*[OnMLPLayer(a, b, norm)
                                             for a, b in zip(hidden[:-1], hidden[1:])])
        self.out_layer = OnMLPLayer(hidden[-1], num_classes, "none", relu=False)

    def forward(self, x):
        return self.out_layer(self.hidden_layers(self.in_layer(x.flatten(1))))


def randomize_(model: nn.Module, seed: int) -> nn.Module:
    """Every parameter and running statistic drawn at random (fan-in scaled weights; norm scales
    near 1; positive variances), so no zero init hides a path and eval mode is not trivial."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(fan_in))
            elif name.endswith(("weight", "gamma", "scale")):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            elif name.endswith("eps"):
                p.copy_(0.05 + 0.01 * torch.rand(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in model.named_buffers():
            if name.endswith(("running_var", "moving_var", "norm.var")):
                b.copy_(0.5 + torch.rand(b.shape, generator=g, dtype=b.dtype))
            elif name.endswith(("running_mean", "moving_mean", "norm.m", "norm.u", "norm.v")):
                b.copy_(0.3 * torch.randn(b.shape, generator=g, dtype=b.dtype))
    return model
