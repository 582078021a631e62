"""The docs agree with the code: the key tables are the configs' own fields, and every page the
README links to exists."""
from __future__ import annotations

import pytest

import re
import subprocess
import sys

from conftest import ROOT


@pytest.mark.slow
def test_the_key_tables_are_generated_from_the_configs():
    p = subprocess.run([sys.executable, "scripts/gen_docs_keys.py", "--check"], cwd=ROOT,
                       capture_output=True, text=True)
    assert p.returncode == 0, (f"{p.stdout}{p.stderr}: run `.venv/bin/python "
                               "scripts/gen_docs_keys.py` after changing a config key")


def test_every_page_the_readme_links_to_exists():
    text = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(((?!https?:)[^)#]+)", text)
    assert links and all((ROOT / link).exists() for link in links), \
        [link for link in links if not (ROOT / link).exists()]
