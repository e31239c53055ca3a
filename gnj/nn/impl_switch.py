"""A switch between implementations of one op: a gnj setting, overridden within a block.

``requested()`` is the innermost ``use(...)`` block's choice, else the setting's value
(``gnj.settings.get(env)``, e.g. ``$GNJ_CONV_IMPL``), whose default is the first choice. Both are
read when the op is traced, so a function jitted before keeps the path it was traced with. A
name outside the choices raises a ValueError listing them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from gnj import settings


class ImplSwitch:
    """The implementation of one op: ``requested()`` and the ``use(impl)`` context manager."""

    def __init__(self, what: str, env: str, choices: tuple[str, ...]):
        if settings.SETTINGS[env].choices != choices:
            raise ValueError(f"{what}: choices {choices} disagree with gnj.settings' {env}")
        self.what, self.env, self.choices = what, env, choices
        self._override: list[str] = []  # innermost use() last

    def requested(self) -> str:
        if self._override:
            return self._override[-1]
        return settings.get(self.env)

    @contextlib.contextmanager
    def use(self, impl: str) -> Iterator[None]:
        """Within the block, trace the op with ``impl``."""
        if impl not in self.choices:
            raise ValueError(f"{self.what} {impl!r}; valid: {', '.join(self.choices)}")
        self._override.append(impl)
        try:
            yield
        finally:
            self._override.pop()
