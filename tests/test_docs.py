"""The documentation is part of the contract: it must stay short, correct and runnable.

- the README stays under 15 KB, and every command of its experiment table runs (`,runlocal`);
- the core names no paper (the grep of docs/architecture.md prints nothing);
- no file of the repository cites a file outside it;
- every relative link of README.md and docs/ resolves, anchors included;
- docs/walkthrough.md and every section of docs/extending.md run as written, code block by code
  block, in a fresh directory.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_python

ROOT = Path(REPO)
README = ROOT / "README.md"
DOC_FILES = sorted([README, *(ROOT / "docs").rglob("*.md")])
README_LIMIT = 15_000  # bytes

#: The contract of issue #15: the core (gnj/ minus gnj/proj/) names no paper, author or
#: reference file. Stated in docs/architecture.md#the-check.
CORE_GREP = (r"\bgne|gradient norm equality|lubana|beyond.?b(atch)?.?n(orm)?\b|blumenfeld|sigprop"
             r"|beyond signal propagation|constnet|leakynet|nn.?mass|bhardwaj|chiley|cerebras"
             r"|online.?norm|chen et al|apuaachen|ekdeep|yanivbl|sldgroup|reference\.md|shared/")

#: A citation of a file outside the repository: the references' inventory, or a path into the
#: shared folder or its seeds (a `shared/` after `|` is the core grep's pattern, not a path).
OUTSIDE_CITATION = re.compile(r"REFERENCE\.md|(^|[\s`(/\"'])(shared|seeds)/")

FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


# ---------------------------------------------------------------------------------------------
# helpers


def code_blocks(text: str) -> list[tuple[str, str]]:
    """The fenced code blocks of a Markdown text, in order, as ``(info string, body)``."""
    return [(m.group(1).strip(), m.group(2)) for m in FENCE.finditer(text)]


def commands(body: str) -> list[str]:
    """The commands of a ``bash`` block: one per line, backslash continuations joined, comments
    and blank lines dropped."""
    joined = body.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(line)
    return out


def slug(heading: str) -> str:
    """GitHub's anchor of a Markdown heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    text = FENCE.sub("", path.read_text())
    seen: dict[str, int] = {}
    out = set()
    for m in re.finditer(r"^#{1,6}\s+(.*?)\s*#*\s*$", text, re.MULTILINE):
        s = slug(m.group(1))
        n = seen.get(s, 0)
        seen[s] = n + 1
        out.add(s if n == 0 else f"{s}-{n}")
    return out


def doc_env(tfds_dir: str) -> dict[str, str]:
    """The environment of a documented command: the repository importable, offline data."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, env.get("PYTHONPATH", "")) if p)
    env["TFDS_DATA_DIR"] = tfds_dir
    env["JAX_PLATFORMS"] = "cpu"
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return env


def run_command(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run one documented shell command in ``cwd``; ``python`` is this interpreter."""
    args = shlex.split(command)
    if args[0] == "python":
        args[0] = sys.executable
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=1800)  # a hang guard, not a speed check
    assert proc.returncode == 0, (f"`{command}` failed ({proc.returncode}):\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return proc


def run_markdown(text: str, cwd: Path, env: dict[str, str]) -> None:
    """Execute a page in order: ``python file=NAME`` blocks are written to ``cwd/NAME``, ``bash``
    blocks are run command by command; other blocks are not code to run."""
    for info, body in code_blocks(text):
        words = info.split()
        files = [w[len("file="):] for w in words if w.startswith("file=")]
        if files:
            (cwd / files[0]).parent.mkdir(parents=True, exist_ok=True)
            (cwd / files[0]).write_text(body)
        elif words[:1] == ["bash"]:
            for command in commands(body):
                run_command(command, cwd, env)


def sections(text: str) -> dict[str, str]:
    """The ``## `` sections of a page by anchor."""
    parts = re.split(r"^## ", text, flags=re.MULTILINE)
    return {slug(p.splitlines()[0]): "## " + p for p in parts[1:]}


def load_config_module(path: str):
    """A config file as a module, imported the way ``--config=<path>`` imports it."""
    name = "docs_cfg_" + re.sub(r"\W", "_", path)
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---------------------------------------------------------------------------------------------
# the README's experiment table


def experiment_rows() -> list[dict]:
    """Rows of the README's experiment table: command, config path, runs to check."""
    text = README.read_text()
    section = text.split("\n## Experiments\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| ") or "`python -m" not in line:
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        command = re.search(r"`(python -m [^`]+)`", cells[2]).group(1)
        others = re.findall(r"`([^`]+)`", cells[3])
        args = shlex.split(command)
        row = {"paper": cells[0], "what": cells[1], "command": command, "args": args}
        if args[2] == "launch.sweep":
            row["config"] = args[3]
            segments = [args[args.index("--segment") + 1]]
            if "segment" in cells[3]:
                segments += others
            row["segments"] = segments
        else:
            config = next(a for a in args if a.startswith("--config="))[len("--config="):]
            row["config"], variant = config.split(":", 1)
            row["variants"] = [variant] + ([] if "segment" in cells[3] or "any" in cells[3]
                                           else others)
        rows.append(row)
    return rows


ROWS = experiment_rows()


def row_id(row: dict) -> str:
    return re.sub(r"\W+", "_", f"{row['paper']} {row['what']}").strip("_").lower()


def test_readme_is_short():
    size = README.stat().st_size
    assert size <= README_LIMIT, f"README.md is {size} bytes; keep it under {README_LIMIT}"


def test_readme_table_has_every_paper():
    assert {r["paper"] for r in ROWS} == {"GNE", "Beyond BN", "ConstNet", "NN-Mass",
                                          "Online Norm"}
    for row in ROWS:
        assert row["config"].startswith("configs/"), row["command"]


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_readme_command_builds_its_configs(row):
    """Every variant a row names (a sweep: every variant of its segments) builds its config with
    `runlocal`, without config flags: import the file, call get_config."""
    module = load_config_module(row["config"])
    if "segments" in row:
        variants = [v for s in row["segments"] for v in module.SEGMENTS[s]]
    else:
        variants = row["variants"]
    assert variants
    for variant in variants:
        config = module.get_config(f"{variant},runlocal")
        assert config.model.name, (row["config"], variant)


@pytest.mark.slow
@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_readme_command_runs(row, tfds_dir, tmp_path):
    """The row's command itself, with `,runlocal` and a fresh workdir (a sweep: its first
    variant, through the launcher)."""
    args = list(row["args"])
    if args[2] == "launch.sweep":
        module = load_config_module(row["config"])
        first = module.SEGMENTS[row["segments"][0]][0]
        i = args.index("--segment")
        args[i:i + 2] = ["--variants", first]
        for flag in ("--repeats", "--start", "--gpus"):
            if flag in args:
                del args[args.index(flag):args.index(flag) + 2]
        args[args.index("--root") + 1] = str(tmp_path / "root")
        args += ["--options", "runlocal"]
    else:
        args = [f"{a},runlocal" if a.startswith("--config=") else a for a in args]
        args = [f"--workdir={tmp_path / 'run'}" if a.startswith("--workdir=") else a
                for a in args]
    run_python(args[1:], env_extra={"TFDS_DATA_DIR": tfds_dir})


# ---------------------------------------------------------------------------------------------
# the core and the citations


def test_core_names_no_paper():
    """docs/architecture.md#the-check: the grep prints nothing (binary caches excluded)."""
    proc = subprocess.run(["grep", "-rniEI", CORE_GREP, "gnj", "--exclude-dir=proj",
                           "--exclude-dir=__pycache__"], cwd=REPO, capture_output=True,
                          text=True)
    assert proc.returncode in (0, 1), proc.stderr
    assert proc.stdout == "", f"the core names a paper:\n{proc.stdout[:5000]}"


def test_architecture_states_the_core_grep():
    assert CORE_GREP in (ROOT / "docs" / "architecture.md").read_text()


def repository_text_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                               cwd=REPO, capture_output=True, text=True, check=True).stdout
        paths = [ROOT / n for n in names.splitlines()]
    except (OSError, subprocess.CalledProcessError):
        paths = [p for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    suffixes = {".py", ".md", ".cc", ".sh", ".toml", ".txt", ".cfg", ".yaml", ".yml", ""}
    return [p for p in paths if p.is_file() and p.suffix in suffixes
            and p != Path(__file__).resolve()]


def test_nothing_cites_files_outside_the_repository():
    offenders = []
    for path in repository_text_files():
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue
        for n, line in enumerate(text.splitlines(), 1):
            if OUTSIDE_CITATION.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()[:120]}")
    assert not offenders, "cited outside the repository:\n" + "\n".join(offenders[:50])


@pytest.mark.parametrize("doc", DOC_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(doc):
    text = FENCE.sub("", doc.read_text())
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):  # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with anchor #{anchor}")
    assert not broken, f"{doc.relative_to(ROOT)}:\n" + "\n".join(broken)


DOC_CITATION = re.compile(r"docs/([\w./-]+\.md)(?:#([\w-]+))?")


def test_code_cites_existing_doc_anchors():
    """Docstrings cite docs pages by anchor (`docs/references.md#moment-norms`): each resolves."""
    broken = []
    for path in repository_text_files():
        if path.suffix not in (".py", ".cc") or path.parts[len(ROOT.parts)] == "docs":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            for page, anchor in DOC_CITATION.findall(line):
                dest = ROOT / "docs" / page
                if not dest.exists():
                    broken.append(f"{path.relative_to(ROOT)}:{n}: docs/{page}: no such file")
                elif anchor and anchor not in anchors(dest):
                    broken.append(f"{path.relative_to(ROOT)}:{n}: docs/{page}#{anchor}: no "
                                  "such heading")
    assert not broken, "\n".join(broken[:80])


# ---------------------------------------------------------------------------------------------
# the walkthrough and the extending examples, run as written


def written_files(text: str, cwd: Path) -> list[str]:
    """Write a page's ``python file=NAME`` blocks into ``cwd``; their names."""
    names = []
    for info, body in code_blocks(text):
        files = [w[len("file="):] for w in info.split() if w.startswith("file=")]
        if files:
            (cwd / files[0]).write_text(body)
            names.append(files[0])
    return names


def test_walkthrough_code_works(tmp_path):
    """Fast: the walkthrough's norm registers, runs on a batch, and its config builds with it."""
    written_files((ROOT / "docs" / "walkthrough.md").read_text(), tmp_path)
    code = (
        "import sys\n"
        f"sys.path[:0] = [{str(tmp_path)!r}, {REPO!r}]\n"
        "import jax, jax.numpy as jnp\n"
        "import toy_config\n"
        "from gnj.registry import NORMS\n"
        "config = toy_config.get_config('runlocal')\n"
        "config.model.norm = 'toy_rms'\n"
        "norm = NORMS.lookup(config.model.norm)()\n"
        "x = jax.random.normal(jax.random.key(0), (2, 4, 4, 3))\n"
        "y, _ = norm.init_with_output(jax.random.key(1), x, True)\n"
        "rms = jnp.sqrt(jnp.mean(jnp.square(y), axis=-1))\n"
        "assert jnp.allclose(rms, 1.0, atol=1e-3), rms\n"
    )
    run_python(code)


def test_walkthrough_runs(tfds_dir, tmp_path):
    """docs/walkthrough.md as written: the toy norm trains, and the analysis has a spectrum."""
    run_markdown((ROOT / "docs" / "walkthrough.md").read_text(), tmp_path, doc_env(tfds_dir))
    workdir = tmp_path / "runs" / "toy"
    config = json.loads((workdir / "config.json").read_text())
    assert config["model"]["norm"] == "toy_rms"
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "step" in r], "the run logged no steps"
    analysis = json.loads((workdir / "analysis" / "analysis.json").read_text())
    network = analysis["spectrum"]["network"]
    assert network["mean_sv"] > 0 and network["phi"] > 0


EXTENDING = sections((ROOT / "docs" / "extending.md").read_text())
EXTENDING_CHECKS = {
    "add-a-norm": ("runs/abs_mean/metrics.jsonl", None),
    "add-a-model": ("runs/tiny_cnn/metrics.jsonl", None),
    "add-an-analysis": ("runs/logits/analysis/analysis.json", "logit_scale"),
    "add-a-paper": ("runs/toy_wide/metrics.jsonl", None),
}


def test_extending_has_every_section():
    assert set(EXTENDING_CHECKS) <= set(EXTENDING)


@pytest.mark.slow
@pytest.mark.parametrize("section", sorted(EXTENDING_CHECKS))
def test_extending_example_runs(section, tfds_dir, tmp_path):
    """Each worked example of docs/extending.md, in its own directory."""
    run_markdown(EXTENDING[section], tmp_path, doc_env(tfds_dir))
    output, key = EXTENDING_CHECKS[section]
    path = tmp_path / output
    assert path.exists(), f"{section}: {output} was not written"
    if key is not None:
        assert key in json.loads(path.read_text()), f"{section}: {key} not in {output}"


@pytest.mark.parametrize("section", sorted(EXTENDING_CHECKS))
def test_extending_example_registers(section, tmp_path):
    """Fast: each example's files import, register their entry and build their config."""
    written_files(EXTENDING[section], tmp_path)
    code = (
        "import importlib, sys\n"
        f"sys.path[:0] = [{str(tmp_path)!r}, {REPO!r}]\n"
        "names = [p[:-3] for p in sys.argv[1:]]\n"
        "for n in names:\n"
        "    importlib.import_module(n)\n"
        "configs = [n for n in names if n.endswith(('_config', '_family'))]\n"
        "assert configs, names\n"
        "for n in configs:\n"
        "    arg = 'wide,runlocal' if n.endswith('_family') else 'runlocal'\n"
        "    importlib.import_module(n).get_config(arg)\n"
    )
    written = sorted(p.name for p in tmp_path.glob("*.py"))
    run_python(["-c", code, *written])


def test_configs_page_lists_every_config_key():
    from gnj import config_schema

    page = (ROOT / "docs" / "configs.md").read_text()
    assert page.split("## every-key", 1)[1].endswith(config_schema.keys_table())
