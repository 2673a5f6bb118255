"""
Sphinx configuration for the midjobs documentation.

The pages of C{docs/} are the prose.  The API reference is pydoctor's, built
from the code's epytext docstrings into C{api/} of the same output through
pydoctor's Sphinx bridge, as Twisted builds its own; the prose links to it
through C{intersphinx} (C{:class:}, C{:func:}, C{:mod:}, ... on a
C{midjobs} name).  Both resolve Python's and Twisted's names against their
inventories, read from files on this machine, so the build needs no network:
Python's from the C{python3.X-doc} package, Twisted's made here by pydoctor
from the installed Twisted (L{_twisted_inventory}).

The docs build keeps pydoctor's report on the docstrings (a bad docstring, a
link it cannot resolve) to itself, as Twisted's does.  pydoctor run on its
own with the same arguments, from the top of the repository, prints it and
exits non-zero if there is anything to say::

    python -m pydoctor $(python docs/conf.py)
"""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version as _version
from pathlib import Path

import twisted

_DOCS = Path(__file__).resolve().parent
_ROOT = _DOCS.parent

project = "midjobs"
author = "the midjobs authors"
copyright = "the midjobs authors"
release = version = "0.1.0"

extensions = ["sphinx.ext.intersphinx", "pydoctor.sphinx_ext.build_apidocs"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []

_PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
_PYTHON_INVENTORY = Path(f"/usr/share/doc/python{_PYTHON}/html/objects.inv")
_PYTHON_URL = f"https://docs.python.org/{_PYTHON}/"
_TWISTED_VERSION = _version("twisted")
_TWISTED_URL = f"https://docs.twisted.org/en/twisted-{_TWISTED_VERSION}/api/"


def _twisted_inventory() -> Path:
    """
    The intersphinx inventory of the installed Twisted, made by pydoctor the
    first time (about half a minute) and kept under C{docs/_build/}.  pydoctor
    runs in a process of its own: imported here, it would register its
    docutils directives before Sphinx registers its own.
    """
    out = _DOCS / "_build" / "inventories" / f"twisted-{_TWISTED_VERSION}"
    inventory = out / "objects.inv"
    if not inventory.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pydoctor",
                "--make-intersphinx",
                "-qq",
                "--docformat=epytext",
                "--project-name=Twisted",
                f"--project-version={_TWISTED_VERSION}",
                f"--html-output={out}",
                str(Path(twisted.__file__).parent),
            ],
            check=True,
        )
    return inventory


if not _PYTHON_INVENTORY.exists():
    raise RuntimeError(
        f"{_PYTHON_INVENTORY} is missing: install python{_PYTHON}-doc,"
        " whose inventory links the docs to Python's"
    )
_TWISTED_INVENTORY = _twisted_inventory()

intersphinx_mapping = {
    "python": (_PYTHON_URL, str(_PYTHON_INVENTORY)),
    "twisted": (_TWISTED_URL, str(_TWISTED_INVENTORY)),
}

#: pydoctor's command line, less the output: quiet enough to print only what
#: is wrong with a docstring.
_PYDOCTOR = [
    "--quiet",
    "--docformat=epytext",
    f"--project-name={project}",
    f"--project-version={release}",
    f"--project-base-dir={_ROOT}",
    f"--intersphinx-file={_PYTHON_INVENTORY}::{_PYTHON_URL}",
    f"--intersphinx-file={_TWISTED_INVENTORY}::{_TWISTED_URL}",
    str(_ROOT / "midjobs"),
]

# The bridge turns every line pydoctor prints into a Sphinx warning, and adds
# a --quiet of its own: that second one keeps the docstrings' report out of
# the docs build (see the top of this file).
pydoctor_args = ["--html-output={outdir}/api", *_PYDOCTOR]
pydoctor_url_path = "api/"


if __name__ == "__main__":
    print(" ".join(["--html-output=docs/_build/pydoctor", *_PYDOCTOR]))
