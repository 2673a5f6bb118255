"""
The configuration file: the example in C{etc/} documents every key the daemon
reads, and its uncommented form is a valid configuration.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from midjobs.config import _KEYS, Settings

EXAMPLE = Path(__file__).parent.parent / "etc" / "midjobs.toml"


def _tables_and_keys(text: str) -> set[tuple[str, str]]:
    found = set()
    table = None
    for line in text.splitlines():
        heading = re.fullmatch(r"\s*\[(\w+)\]\s*", line)
        if heading:
            table = heading.group(1)
            continue
        setting = re.fullmatch(r"\s*#?\s*(\w+)\s*=.*", line)
        if setting and table is not None:
            found.add((table, setting.group(1)))
    return found


def test_the_example_documents_every_key() -> None:
    documented = _tables_and_keys(EXAMPLE.read_text())
    assert set(_KEYS) <= documented, sorted(set(_KEYS) - documented)


def test_the_example_is_valid_once_uncommented(tmp_path: Path) -> None:
    lines = []
    for line in EXAMPLE.read_text().splitlines():
        uncommented = re.sub(r"^#\s*(\w+\s*=)", r"\1", line)
        lines.append(uncommented)
    document = tomllib.loads("\n".join(lines))
    settings = Settings().updated_from(document, str(EXAMPLE))
    assert settings.login_attempts == 5
