"""Regenerate the tables of docs/parity.md from the parity harness (needs PyTorch):

    .venv/bin/python -m tests.parity.table            # rewrites the tables in docs/parity.md
    .venv/bin/python -m tests.parity.table --print    # prints them instead

Table 1 runs every harness case (tests/parity/harness.py). Table 2 counts parameters at the
reference sizes: gnj's (``jax.eval_shape`` of ``init``), the twin's (built on torch's ``meta``
device, so nothing is allocated) and the tensors the reference creates but never uses (the
family's name map in ``gnj.interop.convert``, registered by ``gnj/proj/<paper>/convert.py``),
and checks gnj = twin − unused.
"""

from __future__ import annotations

import os
import re
import sys

import jax
import jax.numpy as jnp
import torch

from gnj.interop import convert
from gnj.models import build
from tests.parity import harness, twins

DOC = os.path.join(os.path.dirname(__file__), "..", "..", "docs", "parity.md")
STANDARD_MBV2 = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                 (6, 160, 3, 2), (6, 320, 1, 1))

# (row, gnj config, classes, input side or (side, channels), twin factory)
COUNTS = [
    ("wrn_constnet WRN-16-10, BN", dict(name="wrn_constnet", depth=16, widen_factor=10), 10, 32,
     lambda: twins.WideResNet(16, 10, 10, True)),
    ("wrn_constnet WRN-16-10, Fixup path",
     dict(name="wrn_constnet", depth=16, widen_factor=10, norm="none"), 10, 32,
     lambda: twins.WideResNet(16, 10, 10, False)),
    ("leakynet 16-10", dict(name="leakynet", depth=16, widen_factor=10), 10, 32,
     lambda: twins.LRNet(16, 10, 10, 0.01)),
    ("dense_cnn D13 wm2 tc 40/80/125", dict(name="dense_cnn"), 10, 32,
     lambda: twins.DenseCNN(13, [32, 64, 128], [40, 80, 125], 10, False, 8)),
    ("dense_cnn_depthwise D13 wm2 tc 40/80/125", dict(name="dense_cnn_depthwise"), 10, 32,
     lambda: twins.DenseCNN(13, [32, 64, 128], [40, 80, 125], 10, True, 8)),
    ("dense_mlp w8 d8 tc10, MNIST", dict(name="dense_mlp", width=8, depth=8, tc=10), 10, (28, 1),
     lambda: twins.DenseMLP(8, 8, 10, 784, 10, 0)),
    ("vgg cfg_10, BN_self", dict(name="vgg", cfg="cfg_10", norm="batch_lubana"), 100, 32,
     lambda: twins.LubanaVGG(twins_cfg10(), "bn", 100)),
    ("vgg cfg_10, FRN + TLU", dict(name="vgg", cfg="cfg_10", norm="frn", act="identity"), 100,
     32, lambda: twins.LubanaVGG(twins_cfg10(), "frn", 100)),
    ("resnet56_lubana post-act, BN_self", dict(name="resnet56_lubana", norm="batch_lubana"), 100,
     32, lambda: twins.LubanaResNet(56, 32, "bn", 100, False, False)),
    ("resnet56_lubana preact + SkipInit, BN_self",
     dict(name="resnet56_lubana", norm="batch_lubana", preact=True, skipinit=True), 100, 32,
     lambda: twins.LubanaResNet(56, 32, "bn", 100, True, True)),
    ("resnet_cifar ResNet-56, BN", dict(name="resnet_cifar", depth=56), 10, 32,
     lambda: twins.GneResNet(56, 16, 10)),
    ("serial_net depth 32, BN", dict(name="serial_net", depth=32), 10, 32,
     lambda: twins.GneResNet(32, 16, 10, residual=False)),
    ("densenet_cifar k12 8-8-8, BN", dict(name="densenet_cifar"), 10, 32,
     lambda: twins.GneDenseNet(12, (8, 8, 8), True, torch.nn.ReLU(True), 10)),
    ("densenet_cifar k12 8-8-8, no norm", dict(name="densenet_cifar", norm="none"), 10, 32,
     lambda: twins.GneDenseNet(12, (8, 8, 8), False, torch.nn.ReLU(True), 10)),
    ("mobilenet_v1, BN", dict(name="mobilenet_v1"), 1000, 224,
     lambda: twins.GneMobileNet(1.0, True, 1000)),
    ("mobilenet_v1 dense, BN", dict(name="mobilenet_v1", dense=True), 1000, 224,
     lambda: twins.GneMobileNet(1.0, True, 1000, dense=True)),
    ("fixup_resnet original, resnet18 arch", dict(name="fixup_resnet", arch="resnet18"), 1000,
     224, lambda: twins.FixupResNet18(1000)),
    ("resnet_cifar ResNet-20 + OnlineNorm, option B",
     dict(name="resnet_cifar", depth=20, shortcut="B", norm="online"), 10, 32,
     lambda: twins.OnlineNormResNet(20, 16, 10, 0.999, 0.99)),
    ("resnet18 (torchvision)", dict(name="resnet18"), 1000, 224,
     lambda: twins.TvResNet18(1000)),
    ("resnet50 (torchvision)", dict(name="resnet50"), 1000, 224,
     lambda: twins.TvResNet18(1000, twins.TvBottleneck, (3, 4, 6, 3))),
    ("resnext50_32x4d (torchvision)", dict(name="resnext50_32x4d"), 1000, 224,
     lambda: twins.TvResNet18(1000, twins.TvBottleneck, (3, 4, 6, 3), 32, 4)),
    ("wide_resnet50_2 (torchvision)", dict(name="wide_resnet50_2"), 1000, 224,
     lambda: twins.TvResNet18(1000, twins.TvBottleneck, (3, 4, 6, 3), 1, 128)),
    ("fixup_resnet original, resnet50 arch", dict(name="fixup_resnet", arch="resnet50"), 1000,
     224, lambda: twins.FixupResNet18(1000, twins.FixupBottleneck, (3, 4, 6, 3))),
    ("mlp 784-500-300-10, BatchNorm1d",
     dict(name="mlp", hidden=(500, 300), norm="batch", use_bias=False), 10, (28, 1),
     lambda: twins.OnMLP(784, (500, 300), 10, "batch")),
    ("mobilenet_v2 wm 1.0 (torchvision)", dict(name="mobilenet_v2"), 1000, 224,
     lambda: twins.TvMobileNetV2(1000, 1.0, STANDARD_MBV2)),
]


def twins_cfg10() -> tuple:
    from gnj.models.vgg import resolve_cfg

    return resolve_cfg("cfg_10")


def parity_rows() -> list[str]:
    rows = ["| model (tiny size) | reference | eval | train | input grad | param grads |",
            "|---|---|---|---|---|---|"]
    for case in harness.CASES:
        e = harness.run_case(case)
        cells = " | ".join(f"{e[c]:.1e}" for c in harness.COLUMNS)
        flag = "" if max(e.values()) <= harness.TOL else " **above 1e-10**"
        rows.append(f"| {case.name}{flag} | {case.reference} | {cells} |")
    return rows


def count_rows() -> list[str]:
    rows = ["| model (reference size) | gnj | twin | unused in the reference "
            "| gnj = twin − unused |", "|---|---|---|---|---|"]
    for label, cfg, classes, side, factory in COUNTS:
        model = build(cfg, classes)
        side, channels = side if isinstance(side, tuple) else (side, 3)
        shape = jax.eval_shape(lambda m=model, s=side, c=channels: m.init(
            jax.random.PRNGKey(0), jnp.zeros((1, s, s, c))))
        ours = sum(x.size for x in jax.tree.leaves(shape["params"]))
        with torch.device("meta"):
            twin = factory()
        names = dict(twin.named_parameters())
        try:
            unused_map = convert.name_map(model)
            unused = sum(p.numel() for k, p in names.items() if unused_map.is_unused(k))
        except ValueError:  # torchvision families: gnj.interop.torchvision's maps, nothing unused
            unused = 0
        total = sum(p.numel() for p in names.values())
        ok = "yes" if ours == total - unused else "**no**"
        rows.append(f"| {label} | {ours:,} | {total:,} | {unused:,} | {ok} |")
    return rows


def replace_block(text: str, tag: str, rows: list[str]) -> str:
    pattern = re.compile(rf"(<!-- {tag} -->\n)(?:.*?\n)?(<!-- /{tag} -->)", re.S)
    if not pattern.search(text):
        raise ValueError(f"docs/parity.md has no <!-- {tag} --> block")
    return pattern.sub(lambda m: m.group(1) + "\n".join(rows) + "\n" + m.group(2), text)


def main(argv: list[str]) -> None:
    parity, counts = parity_rows(), count_rows()
    if "--print" in argv:
        print("\n".join(parity + [""] + counts))
        return
    with open(DOC) as f:
        text = f.read()
    text = replace_block(replace_block(text, "parity-table", parity), "count-table", counts)
    with open(DOC, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main(sys.argv[1:])
