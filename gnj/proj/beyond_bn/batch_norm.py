"""The reference's BatchNorm (``BN_self``) as a registered norm: ``batch_lubana``.

It is the core :class:`gnj.nn.norms.BatchNorm` with ``convention="biased"``: the running
variance averages the biased batch variance and the running mean starts at one
(docs/proj/beyond_bn.md#batchnorm).
"""

from __future__ import annotations

from gnj.nn.norms import BatchNorm
from gnj.registry import NORMS


@NORMS.register("batch_lubana")
class BatchNormLubana(BatchNorm):
    """:class:`BatchNorm` with ``convention="biased"``, the reference's ``BN_self``."""

    convention: str = "biased"


NORMS.alias({"bn_lubana": "batch_lubana"})
