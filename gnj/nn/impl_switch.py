"""A switch between implementations of one op: an environment variable, overridden in a block.

Used by the Online Norm kernel (``$GNJ_ONLINE_NORM_IMPL``) and the oneDNN convolutions
(``$GNJ_CONV_IMPL``). The first choice is the default. Both are read when the op is traced, so a
function jitted before keeps the path it was traced with.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator


class ImplSwitch:
    """``requested()``: the innermost ``use(...)`` block's choice, else ``$<env>``, else
    ``choices[0]``; a name outside ``choices`` raises a ValueError listing them."""

    def __init__(self, what: str, env: str, choices: tuple[str, ...]):
        self.what, self.env, self.choices = what, env, choices
        self._override: list[str] = []  # innermost use() last

    def _check(self, impl: str, source: str) -> str:
        if impl not in self.choices:
            raise ValueError(f"{self.what} {impl!r}{source}; valid: {', '.join(self.choices)}")
        return impl

    def requested(self) -> str:
        if self._override:
            return self._override[-1]
        return self._check(os.environ.get(self.env, self.choices[0]),
                           f" (from {self.env} or use_impl)")

    @contextlib.contextmanager
    def use(self, impl: str) -> Iterator[None]:
        """Within the block, trace the op with ``impl``."""
        self._override.append(self._check(impl, ""))
        try:
            yield
        finally:
            self._override.pop()
