"""Name maps of the reference PyTorch code (ConstNet WRN and LeakyNet) for ``gnj.interop.convert``.

Each map reads the state-dict layout its docstring names (docs/proj/constnet.md#converters).
"""

from __future__ import annotations

import re
from typing import Any

from gnj.interop.convert import NameMap, register_name_map
from gnj.models.layers import is_no_norm


@register_name_map("constnet.wrn", "ConstNet")
def _constnet(model: Any) -> NameMap:
    """BeyondSigProp ``model.py::WideResNet``: conv1, block{s}.layer.{i}.{bn, conv, conv_res,
    scale, biases.0, biases.1}, fc. The BN path never uses ``scale`` / ``biases``, the Fixup path
    never uses ``bn``; ``biases.1`` and ``scale`` are Fixup's b₁ and s."""
    from gnj.proj.constnet.models import blocks_per_stage

    m = NameMap(modules={"conv1": "stem", "fc": "fc"})
    fixup = is_no_norm(model.norm)
    for s in range(1, 4):
        for i in range(blocks_per_stage(model.depth, "wrn_constnet")):
            t, g = f"block{s}.layer.{i}", f"stage{s}_block{i}"
            m.modules.update({f"{t}.conv": f"{g}/conv", f"{t}.conv_res": f"{g}/conv_res"})
            if fixup:
                m.tensors.update({f"{t}.biases.0": f"params/{g}/bias0",
                                  f"{t}.biases.1": f"params/{g}/bias1",
                                  f"{t}.scale": f"params/{g}/scale"})
            else:
                m.norm(f"{t}.bn", f"{g}/norm")
    m.unused = [r"block\d\.layer\.\d+\.bn\..*"] if fixup else [
        r"block\d\.layer\.\d+\.(scale|biases\.\d)"]
    return m


@register_name_map("constnet.leakynet", "LeakyNet")
def _leakynet(model: Any) -> NameMap:
    """BeyondSigProp ``remodel.py::LRNet``: conv1, block{s}.layer.{i}.{bn, conv, biases.0},
    fc; block index i counts globally (phase −1 on odd blocks, the only ones whose ``bn`` runs).
    Unused: ``biases.1`` of every block, ``bn`` of even blocks (and of all without a norm)."""
    from gnj.proj.constnet.models import blocks_per_stage

    n = blocks_per_stage(model.depth, "leakynet")
    m = NameMap(modules={"conv1": "stem", "fc": "fc"}, unused=[r"block\d\.layer\.\d+\.biases\.1"])
    with_norm = not is_no_norm(model.norm)
    for s in range(1, 4):
        for i in range(n):
            t, g, idx = f"block{s}.layer.{i}", f"block{(s - 1) * n + i}", (s - 1) * n + i
            m.modules[f"{t}.conv"] = f"{g}/conv"
            m.tensors[f"{t}.biases.0"] = f"params/{g}/bias0"
            if idx % 2 and with_norm:
                m.norm(f"{t}.bn", f"{g}/norm")
            else:
                m.unused.append(re.escape(f"{t}.bn.") + ".*")
    return m
