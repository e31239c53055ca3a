"""Run a family of experiments: variants × repeats, locally, one after another or N at a time.

    python -m launch.sweep configs/gne/cifar.py --segment initialization --repeats 4 --start 0 \
        --parallel 2 --root runs/gne_init
    python -m launch.sweep configs/online_norm/resnet.py --variants cifar10,online cifar10,batch \
        --repeats 5 --root runs/on_c10 --override num_epochs=10 --dry-run

This is the reference's ``cifar10.sh <data> <segment> <gpu> <repeats> <start>`` (GNEDNN
``exp_list.py``, docs/proj/gne.md) for any family: ``--segment`` picks a list from the family's
``SEGMENTS`` (default: every entry of ``VARIANTS``), ``--variants`` names runs explicitly (options
included, e.g. ``vgg10,group,p0.5``). Run ``i`` of ``--repeats R --start S`` has repeat index
``r = S + i``, workdir ``<root>/<variant>/<r>`` (the reference's ``--log=exp<i+start>``) and
seed ``r`` (``--config.seed``, plus the family's ``SEED_KEYS``, e.g. NN-Mass's topology seed).

Each run is ``python -m gnj.main --config=<family>:<variant> --workdir=<dir> ...`` in a
subprocess, its output in ``<dir>/log.txt``. A run that succeeds gets a ``DONE`` marker and is
skipped by later invocations; an interrupted one (no marker) is started again on the same workdir,
where gnj resumes from its last checkpoint. ``--gpus 0,1`` gives each parallel slot its own
``CUDA_VISIBLE_DEVICES``. A sweep whose runs would share a workdir is refused before anything runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import subprocess
import sys
import time
from collections.abc import Sequence

DONE = "DONE"


MODES = ("train", "eval", "analyze")


def marker_of(mode: str) -> str:
    """The file that marks a run finished in ``mode``: ``DONE`` (training) or ``DONE.<mode>``."""
    if mode not in MODES:
        raise ValueError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    return DONE if mode == "train" else f"{DONE}.{mode}"


@dataclasses.dataclass(frozen=True)
class Run:
    variant: str
    repeat: int
    workdir: str
    command: tuple[str, ...]
    marker: str = DONE


def load_family(path: str):
    """Import a config file (``configs/gne/cifar.py``) as a module."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no config file {path!r}")
    name = "_sweep_family_" + re.sub(r"\W", "_", os.path.abspath(path))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"{path} has no get_config(arg)")
    return module


def variants_of(family, segment: str | None, variants: Sequence[str] | None, path: str
                ) -> list[str]:
    """The runs of a sweep: explicit ``variants``, a segment, or every variant."""
    if variants:
        return list(variants)
    segments = getattr(family, "SEGMENTS", {})
    if segment is not None:
        if segment not in segments:
            raise ValueError(f"{path} has no segment {segment!r}; valid: "
                             f"{', '.join(segments) or '(none)'}")
        return list(segments[segment])
    if not hasattr(family, "VARIANTS"):
        raise ValueError(f"{path} lists no VARIANTS; pass --variants")
    return list(family.VARIANTS)


def dirname_of(variant: str) -> str:
    """A workdir-safe name for a variant (``vgg10,group,p0.5`` → ``vgg10__group__p0.5``)."""
    name = re.sub(r",", "__", variant.strip())
    name = re.sub(r"[^A-Za-z0-9_.=+-]", "_", name)
    return name or "default"


def plan(config_path: str, variants: Sequence[str], repeats: int, start: int, root: str,
         overrides: Sequence[str] = (), options: str = "", seed_keys: Sequence[str] = ("seed",),
         extra_flags: Sequence[str] = (), mode: str = "train") -> list[Run]:
    """Every run of the sweep, in order; refuses runs that would share a workdir.

    ``mode`` ``eval`` / ``analyze`` runs ``gnj.main --mode=<mode>`` on each workdir (the newest
    checkpoint there, or for ``analyze`` the initialisation if there is none), marked done by
    ``DONE.<mode>`` so it is independent of the training runs' ``DONE``.
    """
    marker = marker_of(mode)
    if mode != "train":
        extra_flags = (*extra_flags, f"--mode={mode}")
    if repeats < 1:
        raise ValueError(f"--repeats must be ≥ 1, got {repeats}")
    for o in overrides:
        if "=" not in o:
            raise ValueError(f"--override {o!r} must look like key=value")
    runs, seen = [], {}
    for variant in variants:
        arg = f"{variant},{options}" if options else variant
        for i in range(repeats):
            r = start + i
            workdir = os.path.join(root, dirname_of(arg), str(r))
            key = os.path.abspath(workdir)
            if key in seen:
                raise ValueError(f"runs {seen[key]!r} and {(arg, r)!r} would both write into "
                                 f"{workdir!r}; remove the duplicate variant")
            seen[key] = (arg, r)
            cmd = [sys.executable, "-m", "gnj.main", f"--config={config_path}:{arg}",
                   f"--workdir={workdir}", *(f"--config.{k}={r}" for k in seed_keys),
                   *(f"--config.{o}" for o in overrides), *extra_flags]
            runs.append(Run(arg, r, workdir, tuple(cmd), marker))
    return runs


def is_done(run: Run) -> bool:
    return os.path.exists(os.path.join(run.workdir, run.marker))


def _start(run: Run, gpu: str | None) -> subprocess.Popen:
    os.makedirs(run.workdir, exist_ok=True)
    env = dict(os.environ)
    if gpu is not None:
        env["CUDA_VISIBLE_DEVICES"] = gpu
    log = open(os.path.join(run.workdir, "log.txt"), "a")
    log.write(f"\n$ {' '.join(run.command)}\n")
    log.flush()
    proc = subprocess.Popen(run.command, stdout=log, stderr=subprocess.STDOUT, env=env)
    proc._gnj_log = log  # closed when the run ends
    return proc


def execute(runs: Sequence[Run], parallel: int = 1, gpus: Sequence[str] = (),
            poll_seconds: float = 0.2) -> dict[str, list[Run]]:
    """Run every unfinished run, ``parallel`` at a time; returns done / skipped / failed lists."""
    if parallel < 1:
        raise ValueError(f"--parallel must be ≥ 1, got {parallel}")
    result: dict[str, list[Run]] = {"done": [], "skipped": [], "failed": []}
    pending = []
    for run in runs:
        (result["skipped"] if is_done(run) else pending).append(run)
    free = list(range(parallel))
    active: dict[int, tuple[Run, subprocess.Popen]] = {}
    while pending or active:
        while pending and free:
            slot = free.pop(0)
            run = pending.pop(0)
            gpu = gpus[slot % len(gpus)] if gpus else None
            print(f"[sweep] start {run.variant} repeat {run.repeat} → {run.workdir}", flush=True)
            active[slot] = (run, _start(run, gpu))
        time.sleep(poll_seconds)
        for slot, (run, proc) in list(active.items()):
            code = proc.poll()
            if code is None:
                continue
            proc._gnj_log.close()
            del active[slot]
            free.append(slot)
            if code == 0:
                with open(os.path.join(run.workdir, run.marker), "w") as f:
                    f.write(" ".join(run.command) + "\n")
                result["done"].append(run)
                print(f"[sweep] done  {run.variant} repeat {run.repeat}", flush=True)
            else:
                result["failed"].append(run)
                print(f"[sweep] FAILED ({code}) {run.variant} repeat {run.repeat}: see "
                      f"{os.path.join(run.workdir, 'log.txt')}", flush=True)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m launch.sweep", description=__doc__.split("\n")[0])
    p.add_argument("config", help="config file of the family, e.g. configs/gne/cifar.py")
    p.add_argument("--segment", help="a list from the family's SEGMENTS")
    p.add_argument("--variants", nargs="+", help="explicit variants (default: the segment, or "
                   "every VARIANTS entry)")
    p.add_argument("--options", default="", help="options appended to every variant "
                   "(e.g. runlocal)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--start", type=int, default=0, help="first repeat index (and seed)")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--gpus", default="", help="comma-separated CUDA devices, one per slot")
    p.add_argument("--root", required=True, help="directory of the sweep's workdirs")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="config overrides for every run (--config.KEY=VALUE)")
    p.add_argument("--mode", default="train", choices=MODES,
                   help="gnj.main mode of every run: train (default), eval or analyze (of each "
                   "workdir's newest checkpoint, or of the initialisation if it has none)")
    p.add_argument("--dry-run", action="store_true", help="print the commands only")
    args = p.parse_args(argv)
    family = load_family(args.config)
    variants = variants_of(family, args.segment, args.variants, args.config)
    for v in variants:  # fail before launching anything on a bad variant or option
        family.get_config(f"{v},{args.options}" if args.options else v)
    runs = plan(args.config, variants, args.repeats, args.start, args.root, args.override,
                args.options, getattr(family, "SEED_KEYS", ("seed",)), mode=args.mode)
    if args.dry_run:
        for run in runs:
            state = "done, skipped" if is_done(run) else "to run"
            print(f"# {run.variant} repeat {run.repeat} ({state})\n{' '.join(run.command)}")
        return 0
    gpus = [g for g in args.gpus.split(",") if g.strip()]
    result = execute(runs, args.parallel, gpus)
    print(f"[sweep] {len(result['done'])} done, {len(result['skipped'])} already done, "
          f"{len(result['failed'])} failed", flush=True)
    return 1 if result["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
