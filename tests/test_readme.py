"""The README cannot rot: every shell command and Python snippet it shows runs here (with small inputs: a
Flickr8k photo, a tiny --limit), in README order, in a scratch folder beside the shipped models; and it stays
a page for users (short, no diary, every linked page there)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

README = ROOT / "README.md"
#: Set-up commands that install packages or start a server: checked by what they name, not run here (the app
#: itself is tested by tests/test_app*.py, the server by tests/test_server.py, the test command by CI running it).
NOT_RUN = ("apt-get ", "pip install ", "streamlit run ", "python -m pytest", "captioner serve ")
SMALL = {r"--limit \d+": "--limit 6"}  # training and evaluation on a handful of images


def snippets() -> list[tuple[str, str]]:
    """(language, code) of every ```bash and ```python block, in order."""
    return re.findall(r"```(bash|python)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)


def shell_commands(code: str) -> list[str]:
    """One command per line (continuations joined), comments dropped."""
    joined = re.sub(r"\\\n\s*", " ", code)
    return [line.split("  #")[0].strip() for line in joined.splitlines() if line.strip()]


def shared() -> Path:
    return Path(os.environ.get("CAPTIONER_SHARED", ROOT.parent / "shared")).resolve()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A folder like the checkout for the README's commands: the shipped models and app, a photo, photos/."""
    images = shared() / "data" / "flickr8k" / "Images"
    photos = sorted(images.glob("*.jpg"))[:2]
    if not photos:
        pytest.fail(f"no Flickr8k photos in {images}; set CAPTIONER_SHARED")
    work = tmp_path_factory.mktemp("readme")
    for name in ("mymodel.h5", "tokenizer.pkl", "models", "configs", "app.py", "requirements.txt",
                 "requirements-app.txt", ".streamlit"):
        (work / name).symlink_to(ROOT / name)
    shutil.copy(photos[0], work / "photo.jpg")
    (work / "photos").mkdir()
    for photo in photos:
        shutil.copy(photo, work / "photos" / photo.name)
    return work


def run(command: str, work: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MPLBACKEND": "Agg"}
    result = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"


def adapted(command: str) -> str:
    """The README's command with the local paths and small inputs of this test."""
    command = command.replace("../shared", shlex.quote(str(shared())))
    for pattern, small in SMALL.items():
        command = re.sub(pattern, small, command)
    if command.startswith("captioner evaluate"):
        command += " --fast"  # no Java tokenizer or METEOR: the metrics have their own tests
    return re.sub(r"(^|&& )captioner ", rf"\1{shlex.quote(sys.executable)} -m captioner ", command)


def check_not_run(command: str) -> None:
    """A set-up command is not run, but every file it names must exist."""
    for word in re.findall(r"[\w./-]+\.(?:txt|py)\b", command):
        assert (ROOT / word).is_file(), f"the README's `{command}` names {word}, which does not exist"


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(snippets())))
def test_readme_snippet_runs(index: int, workdir: Path):
    language, code = snippets()[index]
    if language == "python":
        script = workdir / f"snippet{index}.py"
        script.write_text(code, encoding="utf-8")
        run(f"{shlex.quote(sys.executable)} {script.name}", workdir)
        return
    for command in shell_commands(code):
        if any(step.strip().startswith(NOT_RUN) or re.match(r"^(\w+=\S+ )+streamlit ", step.strip())
               for step in command.split("&&")):
            check_not_run(command)
        else:
            run(adapted(command), workdir)


def test_the_readme_is_a_page_for_users():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    for phrase in ("issue #", "targets of issue", "quiet morning", "half an hour later", "tried and dropped",
                   "this round", " tests;", "minutes on a fresh"):
        assert phrase not in text, f"the README should not say {phrase!r}: it belongs in docs/"
    assert len(re.findall(r"```bash\n(?:(?!```).)*?```", text, re.S)) >= 2, "set-up: an install and a test command"


def test_every_linked_page_exists():
    for document in (README, ROOT / "MODEL_CARD.md", *sorted((ROOT / "docs").glob("*.md"))):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", document.read_text(encoding="utf-8")):
            assert (document.parent / target).exists(), f"{document.name} links to {target}, which is missing"


@pytest.mark.parametrize(("command", "expected"), [
    ("captioner train --data ../shared/data/flickr8k --limit 200", "--limit 6"),
    ("captioner evaluate --split dev", "--fast"),
])
def test_commands_are_made_small(command, expected):
    assert expected in adapted(command) and "-m captioner" in adapted(command)
