"""How a run stops early: preemption signals and divergence, as exceptions with exit statuses.

SIGTERM (a job scheduler's preemption) and SIGINT (Ctrl-C) both set a flag the training loop
reads between steps: the loop finishes the current step, saves a checkpoint, waits for it, and
raises :class:`Preempted` (no evaluation, no ``final:`` line); the command line exits with
128 + the signal number (143, 130). A second SIGINT exits at once (status 130): the last
complete checkpoint stays, since orbax only renames a checkpoint into place once it is complete.
A non-finite loss or gradient norm raises :class:`Diverged` (exit status 3). See
``docs/reliability.md``.
"""

from __future__ import annotations

import os
import signal
import sys


class Preempted(Exception):
    """The run stopped on a signal after saving the checkpoint of step ``step``."""

    def __init__(self, step: int, signum: int):
        self.step, self.signum = step, signum
        self.exit_status = 128 + signum
        super().__init__(f"preempted at step {step} ({signal.Signals(signum).name}): "
                         f"checkpoint saved; run the same command again to resume")


class Diverged(Exception):
    """A non-finite loss or gradient norm at step ``step`` (``on_nonfinite="stop"``)."""

    def __init__(self, step: int, last_good: int | None):
        self.step, self.last_good = step, last_good
        kept = (f"the last good checkpoint (step {last_good}) is kept" if last_good is not None
                else "no checkpoint was written")
        super().__init__(f"diverged at step {step}: non-finite loss or gradient norm; {kept}. "
                         "Lower config.optim.lr, add config.optim.clip_norm, or set "
                         "config.on_nonfinite='skip'")


class StopRequests:
    """Context manager turning SIGTERM / SIGINT into ``self.signum`` (checked between steps);
    a second SIGINT exits the process at once."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self):
        self.signum: int | None = None
        self._old: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> StopRequests:
        for sig in self.SIGNALS:
            try:
                self._old[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread: signals stay as they were
                pass
        return self

    def _handler(self, signum: int, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            print(f"{signal.Signals(signum).name} again: exiting now; the last complete "
                  "checkpoint is kept", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        if self.signum is None:
            self.signum = signum
            print(f"{signal.Signals(signum).name}: finishing the current step, then saving "
                  "(Ctrl-C again to exit at once)", file=sys.stderr, flush=True)

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old.clear()
