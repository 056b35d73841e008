"""The README and docs/ against the code: every ``senet`` command in their shell blocks parses, with
only config keys the suite knows as overrides, and the README's test command is the one CI runs."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from senet import config
from senet.cli import COMMANDS, build_parser, parse_overrides

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _commands(path: Path) -> list[str]:
    """Every ``senet ...`` command line of the file's ```bash blocks (a comment after it dropped)."""
    blocks = re.findall(r"```bash\n(.*?)```", path.read_text(), flags=re.S)
    found = []
    for line in "\n".join(blocks).splitlines():
        for m in re.finditer(r"(?<![\w/-])senet [^'\"#\n]*", line):
            found.append(m.group(0).strip())
    return found


@pytest.mark.parametrize("path", DOCS, ids=lambda p: p.name)
def test_every_senet_command_in_the_docs_parses(path):
    for cmd in _commands(path):
        argv = shlex.split(cmd)[1:]
        try:
            args, extra = build_parser().parse_known_args(argv)
        except SystemExit:
            pytest.fail(f"{path.name}: {cmd!r} does not parse")
        assert args.command, cmd
        if extra:  # --key value overrides: only where the command takes them, and only known keys
            assert COMMANDS.get(args.command).overrides, f"{path.name}: {cmd!r}: unrecognized {extra}"
            config.from_flat(parse_overrides(extra))


def test_the_readme_names_the_test_command_ci_runs():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make test" in ci and "make test    #" in readme
    assert re.search(r"^test: ", (ROOT / "Makefile").read_text(), re.M)


def test_the_readme_finds_its_commands():
    assert _commands(ROOT / "README.md")  # the parse test has something to check
