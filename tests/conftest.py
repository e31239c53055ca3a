"""Shared fixtures: one TFDS data dir per test session with the offline datasets built once."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# One persistent XLA compilation cache for every test session on this machine (and their
# subprocesses), kept beside the compiled CPU kernels in the user's cache: the suite compiles the
# same programs many times (a run and its resumed twin, a fresh clone of the repository), and
# caching every program, not only the slow ones, halves the suite's time once the cache is warm.
# The cache key is the compiled program and the compiler's options, not the checkout's path.
_USER_CACHE = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(_USER_CACHE, "gnj", "jax-tests"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
# Single-threaded BLAS: NumPy/SciPy helpers in the tests (QR, SVD) otherwise fight XLA's threads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """A test module may define ``slow_case(test_name, params) -> bool``: the parametrized cases
    it returns True for are marked ``slow`` (run by ``make test-all``), the others stay in
    ``make test``. Used where a grid of cases re-checks one code path many times over; the fast
    subset still covers every value of every parameter."""
    for item in items:
        pick = getattr(getattr(item, "module", None), "slow_case", None)
        callspec = getattr(item, "callspec", None)
        if pick is not None and callspec is not None and pick(item.originalname,
                                                              dict(callspec.params)):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory) -> str:
    """A TFDS data dir holding the built ``gnj_digits`` set."""
    path = str(tmp_path_factory.mktemp("tfds"))
    from gnj.data import load

    load("digits", data_dir=path)
    return path


def run_python(code_or_args: list[str] | str, devices: int = 1, timeout: int = 1800,
               check: bool = True, env_extra: dict[str, str] | None = None, cwd: str = REPO,
               **popen) -> subprocess.CompletedProcess:
    """Run Python in a subprocess with ``devices`` fake CPU devices (set before jax imports).

    ``env_extra``: more environment variables; ``cwd``: the working directory (the repository
    root by default; elsewhere the repository is put on ``PYTHONPATH``). ``timeout`` is a hang
    guard, not a speed check.
    """
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    if cwd != REPO:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env.update(env_extra or {})
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    proc = subprocess.run([sys.executable, *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, **popen)
    if check and proc.returncode != 0:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


@pytest.fixture(scope="session")
def digits_npz(tfds_dir, tmp_path_factory) -> str:
    """The digits set as an ``arrays(path=...)`` file: subprocess runs read it without tf.data
    (loading it through TFDS costs each process several seconds)."""
    import numpy as np

    from gnj.data import load

    d = load("digits", data_dir=tfds_dir)
    path = str(tmp_path_factory.mktemp("npz") / "digits.npz")
    np.savez(path, train_images=d.train_x, train_labels=d.train_y, test_images=d.test_x,
             test_labels=d.test_y)
    return path
