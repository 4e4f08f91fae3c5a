"""The README's deployment recipe is scripts/try-it.sh, quoted verbatim: the script is what the system test runs
(tests/system/test_try_it.py), so the README cannot drift from commands that work."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def deployment_section() -> str:
    readme = (REPO / "README.md").read_text()
    start = readme.index("## Running on a real deployment\n")
    return readme[start : readme.index("\n## ", start + 1)]


def test_the_readme_quotes_the_try_it_script_verbatim():
    blocks = re.findall(r"```bash\n(.*?)```", deployment_section(), flags=re.S)
    assert blocks == [(REPO / "scripts" / "try-it.sh").read_text()]


def test_the_deployment_section_has_no_command_outside_the_script():
    # Commands in prose would escape the test that runs the script: only the quoted block holds commands.
    assert len(re.findall(r"```", deployment_section())) == 2
