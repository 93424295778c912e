"""README.md, run: every `$ semdb ...` line of its tour runs, as a user types it, in a fresh home
folder holding the tour's photos, with the tiny random-init model standing in for CLIP
(SEMDB_MODEL); each must exit 0 and print what the README shows under it (paths, numbers and
column widths aside). The README's Python example runs too. So the README cannot drift from
the program: a renamed command or option, a changed output or a failing step fails here.
Also: the README's size, links and test command (the one .ci/run runs), and docs/CLI.md naming
every option of every command.

To add a step: put `$ semdb ...` and its output in a console block under the tour's heading;
`python tests/cli/test_readme_tour.py /home/me` (a folder that does not exist yet) prints the
whole tour's real output to paste. `semdb serve` lines run in the background (on a free port)
until they print their address, and are asked one search.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CI_RUN = ROOT / ".ci" / "run"
TEST_COMMAND = (
    "pip install -e '.[test]' && ruff check . && ruff format --check . && python -m pytest -n 2 --dist loadfile"
)
MAX_README_BYTES = 10 * 1024
SHOWN_HOME = "/home/me"  # the home folder the README's sample output was made in
TOUR_HEADING = re.compile(r"^##\s+.*\btour\b", re.IGNORECASE)
SERVE_START_TIMEOUT = 180  # seconds: model load on a busy 2-core machine


@dataclass
class Step:
    command: str  # as the README shows it, without "$ "
    shown: list[str] = field(default_factory=list)  # the output lines the README shows under it


@dataclass
class Ran:
    step: Step
    returncode: int
    stdout: str
    stderr: str


def readme_section(text: str, heading: re.Pattern) -> str:
    """The text under the first `## ` heading matching `heading`, up to the next `## ` heading."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if heading.match(line)), None)
    assert start is not None, f"README.md has no heading matching {heading.pattern!r}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return "\n".join(lines[start + 1 : end])


def code_blocks(text: str, languages: tuple[str, ...]) -> list[str]:
    return [m.group(2) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.M | re.S) if m.group(1) in languages]


def tour_steps(text: str) -> list[Step]:
    """The `$ command` lines of the tour's console blocks, each with the lines shown under it."""
    steps: list[Step] = []
    for block in code_blocks(readme_section(text, TOUR_HEADING), ("console", "shell", "bash", "sh")):
        for line in block.splitlines():
            if line.startswith("$ "):
                steps.append(Step(line[2:].strip()))
            elif steps and line.strip():
                steps[-1].shown.append(line)
    return steps


def tour_photos(pictures: Path) -> None:
    """The tour's ~/Pictures: scikit-image's four sample photos, three drawings, and a copy of
    the cat photo as a phone would name it."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from kit import write_photos

    write_photos(pictures, n_generated=3)
    (pictures / "phone").mkdir()
    shutil.copy2(pictures / "chelsea.jpg", pictures / "phone" / "IMG_0412.jpg")


def tour_env(home: Path, model_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SEMDB_", "XDG_"))}
    env.update(
        HOME=str(home),
        SEMDB_MODEL="local-dir:" + model_dir,  # the tiny model stands in for CLIP
        HF_HUB_OFFLINE="1",
        COLUMNS="100",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",  # this environment's `semdb`
    )
    if os.environ.get("SEMDB_CACHE_DIR"):  # conftest's temp cache: ONNX exports stay out of ~/.cache
        env["SEMDB_CACHE_DIR"] = os.environ["SEMDB_CACHE_DIR"]
    return env


def run_serve(step: Step, home: Path, env: dict) -> Ran:
    """`semdb serve ...` on a free port until it prints its address; then one search over HTTP.
    Its output (stdout and stderr) is returned as stderr: the README may show any of it."""
    log = home / "serve.log"
    failure = None
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {step.command} --port 0"],
            cwd=home,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            deadline = time.monotonic() + SERVE_START_TIMEOUT
            while not (address := re.search(r"http://[\w.:]+/", log.read_text(errors="replace"))):
                if proc.poll() is not None or time.monotonic() > deadline:
                    failure = "exited" if proc.poll() is not None else f"no address in {SERVE_START_TIMEOUT} s"
                    break
                time.sleep(0.2)
            else:
                try:
                    with urllib.request.urlopen(address.group(0) + "api/search?q=a+cat&k=2", timeout=120) as resp:
                        if not json.load(resp)["hits"]:
                            failure = "GET /api/search found nothing"
                except (OSError, ValueError, KeyError) as e:
                    failure = f"GET /api/search failed: {e!r}"
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(30)
    output = log.read_text(errors="replace")
    if failure:
        return Ran(step, proc.returncode or -1, "", f"{output}\n{failure}")
    return Ran(step, proc.returncode, "", output)


def run_tour(steps: list[Step], home: Path, model_dir: str) -> list[Ran]:
    """Each step in `home` (its Pictures made first) as `bash -c COMMAND`, in order."""
    tour_photos(home / "Pictures")
    env = tour_env(home, model_dir)
    ran = []
    for step in steps:
        if shlex.split(step.command)[:2] == ["semdb", "serve"]:
            ran.append(run_serve(step, home, env))
            continue
        proc = subprocess.run(
            ["bash", "-c", step.command], cwd=home, env=env, capture_output=True, text=True, timeout=600
        )
        ran.append(Ran(step, proc.returncode, proc.stdout, proc.stderr))
    return ran


BOX_RULES = "─━═"


def normalised(line: str, home: str) -> str:
    """A line as compared with the README: the home folder shown as SHOWN_HOME, every number
    0, runs of spaces and table rules one space (tables are as wide as their longest path)."""
    line = line.replace(home, SHOWN_HOME)
    line = re.sub(r"\d+", "0", line)
    return re.sub(f"[\\s{BOX_RULES}]+", " ", line).strip()


def shown_mismatch(ran: Ran, home: str) -> str | None:
    """None when the README shows what the step printed: all of its stdout and any of its
    stderr lines (a note, the server's address), in order; else what differs."""
    errs = {normalised(line, home) for line in ran.stderr.splitlines() if line.strip()}
    shown = [normalised(line, home) for line in ran.step.shown]
    shown_out = [line for line in shown if line not in errs]
    printed = [normalised(line, home) for line in ran.stdout.splitlines() if line.strip()]
    if shown_out != printed:
        return f"$ {ran.step.command}\nREADME shows:\n" + "\n".join(shown_out) + "\nprinted:\n" + "\n".join(printed)
    return None


# --- tests ---


@pytest.fixture(scope="module")
def tour(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("tour") / "me"
    home.mkdir()
    steps = tour_steps(README.read_text(encoding="utf-8"))
    return home, run_tour(steps, home, tiny_model_dir)


def test_tour_is_semdb_commands():
    steps = tour_steps(README.read_text(encoding="utf-8"))
    assert len(steps) >= 5, [s.command for s in steps]
    for step in steps:
        assert shlex.split(step.command)[0] == "semdb", f"a tour step that is not a semdb command: {step.command}"
        assert step.shown, f"the README shows no output for: {step.command}"


def test_every_tour_command_runs(tour):
    _, ran = tour
    failed = [f"$ {r.step.command}  (exit {r.returncode})\n{r.stderr.strip()[-2000:]}" for r in ran if r.returncode]
    assert not failed, "\n\n".join(failed)


def test_tour_output_is_what_the_readme_shows(tour):
    home, ran = tour
    mismatches = [m for r in ran if not r.returncode and (m := shown_mismatch(r, str(home)))]
    assert not mismatches, "\n\n".join(mismatches)


def test_readme_python_example_runs(tour, tmp_path, tiny_model_dir):
    """The Python section's code, run in the tour's home after the tour (the photos are there)."""
    home, _ = tour
    text = README.read_text(encoding="utf-8")
    blocks = code_blocks(readme_section(text, re.compile(r"^##\s+.*\bPython\b")), ("python",))
    assert blocks, "README.md has no python block under its Python heading"
    script = tmp_path / "example.py"
    script.write_text("\n".join(blocks), encoding="utf-8")
    env = tour_env(home, tiny_model_dir)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run([sys.executable, str(script)], cwd=home, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_readme_is_at_most_10_kb():
    size = README.stat().st_size
    assert size <= MAX_README_BYTES, f"README.md is {size} bytes; at most {MAX_README_BYTES}: move reference to docs/"


def test_readme_test_command_is_what_ci_runs():
    readme = README.read_text(encoding="utf-8")
    first_block = code_blocks(readme, ("bash", "console", "shell", "sh"))[0]
    assert TEST_COMMAND in first_block.splitlines()[1], "the README's second command must be the test command"
    ci_commands = [line.strip() for line in CI_RUN.read_text(encoding="utf-8").splitlines()]
    assert TEST_COMMAND in ci_commands, ".ci/run must run exactly the README's test command"


def test_readme_links_resolve():
    """Every relative link of the README names a file of the repository."""
    readme = README.read_text(encoding="utf-8")
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", readme) if not re.match(r"\w+://", t)]
    missing = [t for t in targets if t and not (ROOT / t).exists()]
    assert not missing, missing


def test_cli_reference_names_every_option():
    """docs/CLI.md has a section for every command (a `## ` heading naming it) that names each of
    its options, so an option added to the program without a word in the reference fails here."""
    import typer.main

    from semdb.cli import app

    doc = (ROOT / "docs" / "CLI.md").read_text(encoding="utf-8")
    preamble, *parts = re.split(r"^## ", doc, flags=re.M)  # the preamble names what every command takes
    sections = {}
    for part in parts:
        title, _, body = part.partition("\n")
        for word in re.findall(r"[\w-]+", title):
            sections.setdefault(word, preamble + body)
    missing = []
    for name, command in typer.main.get_command(app).commands.items():
        if name not in sections:
            missing.append(f"no `## {name}` section")
            continue
        for param in command.params:
            names = [o for o in param.opts if o.startswith("-")]
            if names and not any(re.search(re.escape(o) + r"(?![\w-])", sections[name]) for o in names):
                missing.append(f"{name} {'/'.join(names)}")
    assert not missing, "docs/CLI.md does not document: " + ", ".join(missing)


if __name__ == "__main__":
    # Print the tour's real output, to paste into README.md: run it in a home folder that does
    # not exist yet (SHOWN_HOME gives the README's paths), with a freshly written tiny model.
    sys.path.insert(0, str(ROOT))
    from semdb.testing import write_tiny_model

    home = Path(sys.argv[1] if len(sys.argv) > 1 else SHOWN_HOME)
    home.mkdir(parents=True)
    model_dir = write_tiny_model(home / ".tiny-model", seed=0)
    for r in run_tour(tour_steps(README.read_text(encoding="utf-8")), home, model_dir):
        print(f"$ {r.step.command}   # exit {r.returncode}")
        print(r.stderr.rstrip() if not r.stdout else r.stdout.rstrip())
        print("--- stderr:\n" + r.stderr.rstrip() if r.stdout else "")
