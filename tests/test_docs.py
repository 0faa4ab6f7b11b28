"""The documentation: the Sphinx site builds without a warning, the command line reference
names every command and option of the real parser, the API reference every public name, and
the README stays what a newcomer reads first.

One build of the site (a few seconds); the rest reads text.
"""

from __future__ import annotations

import argparse
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest

import orchestrator
from orchestrator import cli

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.rst"
#: The CI command (the last line of .ci/run), which the README must give as it is.
TEST_COMMAND = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
BUILD_COMMAND = "python -m sphinx -W -b html docs docs/_build/html"
GUARD = 'if __name__ == "__main__":'


@pytest.mark.timeout(300)
def test_the_site_builds_without_a_warning(tmp_path):
    try:
        built = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q",
                                "-b", "html", str(DOCS), str(tmp_path / "html")], cwd=ROOT,
                               capture_output=True, text=True, timeout=240)
    except subprocess.TimeoutExpired as expired:
        pytest.fail(f"sphinx-build did not finish within 240 s:\n{expired.stdout}\n"
                    f"{expired.stderr}")
    assert built.returncode == 0, f"sphinx-build failed:\n{built.stderr}\n{built.stdout}"
    assert (tmp_path / "html" / "index.html").exists()
    for page in ("getting-started", "cli", "api", "performance", "reliability",
                 "guide/containment", "guide/robustness", "guide/status"):
        assert (tmp_path / "html" / f"{page}.html").exists(), page


# -- the command line reference ----------------------------------------------------------------

def _documented_options() -> dict[str, set[str]]:
    """``{"orchestrator run": {"--log-level", ...}, ...}`` from the ``.. program::`` and
    ``.. option::`` directives of docs/cli.rst."""
    documented: dict[str, set[str]] = {}
    program = None
    for line in (DOCS / "cli.rst").read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\.\. program:: (.+)", line.strip())
        if match:
            program = match.group(1).strip()
            documented.setdefault(program, set())
            continue
        match = re.fullmatch(r"\.\. option:: (.+)", line.strip())
        if match:
            assert program is not None, f"an option before any program: {line!r}"
            for form in match.group(1).split(","):
                documented[program].add(form.split()[0])
    return documented


def _real_options() -> dict[str, set[str]]:
    """The same, walked from the parser that ``orchestrator`` runs; each command's help
    option is documented once, on the program itself."""
    parser = cli._parser()
    real: dict[str, set[str]] = {}

    def options(command: argparse.ArgumentParser, skip_help: bool) -> set[str]:
        return {string for action in command._actions for string in action.option_strings
                if not (skip_help and isinstance(action, argparse._HelpAction))}

    real[cli.PROGRAM] = options(parser, skip_help=False)
    [commands] = [action for action in parser._actions
                  if isinstance(action, argparse._SubParsersAction)]
    for name, command in commands.choices.items():
        real[f"{cli.PROGRAM} {name}"] = options(command, skip_help=True)
    return real


def test_every_command_and_option_is_in_the_cli_reference():
    documented, real = _documented_options(), _real_options()
    missing_commands = sorted(set(real) - set(documented))
    assert not missing_commands, f"docs/cli.rst has no '.. program::' for {missing_commands}"
    for program, options in real.items():
        long_options = {option for option in options if option.startswith("--")}
        missing = sorted(long_options - documented[program])
        assert not missing, f"docs/cli.rst: '{program}' does not document {missing}"


def test_the_cli_reference_names_no_option_that_does_not_exist():
    documented, real = _documented_options(), _real_options()
    assert not sorted(set(documented) - set(real)), "docs/cli.rst documents unknown commands"
    for program, options in documented.items():
        extra = sorted(options - real[program])
        assert not extra, f"docs/cli.rst: '{program}' has no options {extra}"


# -- the API reference --------------------------------------------------------------------------

def test_every_public_name_is_in_the_api_reference():
    text = (DOCS / "api.rst").read_text(encoding="utf-8")
    directives = set(re.findall(r"^\.\. auto(?:class|exception|function|data):: (\w+)", text,
                                re.MULTILINE))
    missing = sorted(set(orchestrator.__all__) - directives)
    assert not missing, f"docs/api.rst has no autodoc entry for {missing}"


# -- the README ---------------------------------------------------------------------------------

def test_the_readme_is_short_and_gives_the_guard_before_its_first_python_example():
    text = README.read_text(encoding="utf-8")
    lines = text.splitlines()
    assert len(lines) <= 300, f"README.rst has {len(lines)} lines; keep it under 300"
    first_example = text.index(".. code-block:: python")
    assert GUARD in text[:first_example], \
        "README.rst must state the __main__ guard before its first Python example"


def test_the_readme_gives_the_test_and_build_commands_and_renders():
    import docutils.core

    text = README.read_text(encoding="utf-8")
    assert TEST_COMMAND in text
    assert TEST_COMMAND in (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert BUILD_COMMAND in text
    for link in re.findall(r"<(docs/[^>]+\.rst)>`_", text):
        assert (ROOT / link).is_file(), f"README.rst links to {link}, which does not exist"
    problems = io.StringIO()
    docutils.core.publish_doctree(text, settings_overrides={
        "report_level": 2, "halt_level": 5, "warning_stream": problems})
    assert not problems.getvalue(), problems.getvalue()
