"""The layer bundle of a model: its norm, conv, activation and kernel init, resolved once.

A model's fields name its layers by spec strings (``norm="group(groups=8)"``, ``conv="sws"``,
``act="relu"``, ``weight_init="kaiming_normal"``; the registries of ``gnj.registry``). The
top-level module turns them into one :class:`Layers` with :meth:`Layers.from_specs` and hands
it to its blocks, which build their layers from it::

    layers = Layers.from_specs(norm=self.norm, conv=self.conv, act=self.act,
                               init=self.weight_init)
    y = layers.conv(64, 3, stride=2, name="conv1")(x)    # kernel init: layers.init
    y = layers.act()(layers.norm(name="norm1")(y, train))

Each spec is parsed and looked up once, in :meth:`Layers.from_specs`; a block holds no spec
string. ``init`` is the kernel initializer of the block convs, built with the gain of the
activation unless a gain is given.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any, ClassVar

import flax.linen as nn
import jax

from gnj.models import common
from gnj.nn.inits import Initializer
from gnj.registry import ACTIVATIONS, CONVS, NORMS, spec_name


def is_no_norm(spec: str) -> bool:
    """Whether norm spec ``spec`` names the identity norm (``none`` or one of its aliases)."""
    return NORMS.get(spec_name(spec)) is NORMS.get("none")


@dataclasses.dataclass(frozen=True)
class Layers:
    """Resolved layer factories; build with :meth:`from_specs`.

    ``norm_spec`` / ``conv_spec`` / ``act_spec`` keep the spec strings for rules that read the
    names; the factories are the registries' entries with the spec's arguments applied.
    ``conv_bias``: the default ``use_bias`` of :meth:`conv`; ``has_norm``: False when the norm
    is the identity (``none``).
    """

    norm_spec: str
    conv_spec: str
    act_spec: str
    init: Initializer
    conv_bias: bool
    has_norm: bool
    norm_factory: functools.partial
    conv_factory: functools.partial
    act_factory: functools.partial
    act_takes_name: bool

    @classmethod
    def from_specs(cls, norm: str = "batch", conv: str = "plain", act: str = "relu",
                   init: str | Initializer = "kaiming_normal", *, gain: float | None = None,
                   conv_bias: bool = False) -> Layers:
        """The bundle of these specs; ``gain`` of ``init`` defaults to the activation's (an
        ``init`` given as an initializer is taken as it is)."""
        act_factory = ACTIVATIONS.lookup(act)
        entry = act_factory.func
        return cls(norm_spec=norm, conv_spec=conv, act_spec=act,
                   init=common.make_init(init, act, gain) if isinstance(init, str) else init,
                   conv_bias=conv_bias, has_norm=not is_no_norm(norm),
                   norm_factory=NORMS.lookup(norm), conv_factory=CONVS.lookup(conv),
                   act_factory=act_factory,
                   act_takes_name=isinstance(entry, type) and issubclass(entry, nn.Module))

    def replace(self, **changes: Any) -> Layers:
        """A copy with some fields changed, e.g. ``layers.replace(init=other_init)``."""
        return dataclasses.replace(self, **changes)

    def norm(self, name: str | None = None, **kwargs: Any) -> nn.Module:
        """A new norm module; ``kwargs`` are extra constructor arguments (e.g. ``scale_init``)."""
        return self.norm_factory(name=name, **kwargs)

    def act(self, name: str | None = None) -> nn.Module:
        """A new activation module (module activations with parameters get ``name``)."""
        return self.act_factory(name=name) if self.act_takes_name else self.act_factory()

    def conv(self, features: int, kernel_size: int, stride: int = 1, *,
             padding: int | None = None, use_bias: bool | None = None,
             kernel_init: Callable | None = None, groups: int = 1,
             name: str | None = None) -> nn.Module:
        """A square conv with PyTorch padding (``k//2`` unless given); kernel init ``init``
        and bias ``conv_bias`` unless given (see ``gnj.models.common.conv``)."""
        return common.conv(self.conv_factory, features, kernel_size, stride, padding=padding,
                           use_bias=self.conv_bias if use_bias is None else use_bias,
                           kernel_init=self.init if kernel_init is None else kernel_init,
                           groups=groups, name=name)


class ConvNormAct(nn.Module):
    """conv k×k (stride, groups; ``groups=-1``: one group per input channel) → norm → act."""

    features: int
    kernel_size: int
    stride: int
    layers: Layers
    groups: int = 1

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        groups = x.shape[-1] if self.groups == -1 else self.groups
        x = self.layers.conv(self.features, self.kernel_size, self.stride, groups=groups,
                             name="conv")(x)
        return self.layers.act()(self.layers.norm(name="norm")(x, train))


class ConvNormActBlock(ConvNormAct):
    """:class:`ConvNormAct` marked as a block for block-wise analysis."""

    is_block: ClassVar[bool] = True
