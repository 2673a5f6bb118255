"""Sphinx configuration for the midjobs documentation."""

import os
import re
import sys

sys.path.insert(0, os.path.abspath(".."))

project = "midjobs"
author = "the midjobs authors"
copyright = "the midjobs authors"
release = version = "0.1.0"

extensions = ["sphinx.ext.autodoc"]
exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path = []

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True

# The code's docstrings are epytext (@param, C{...}); the hook below turns them
# into reStructuredText that autodoc understands.

_FIELDS = [
    (re.compile(r"^(\s*)@param\s+(\w+):"), r"\1:param \2:"),
    (re.compile(r"^(\s*)@ivar\s+(\w+):"), r"\1:ivar \2:"),
    (re.compile(r"^(\s*)@cvar\s+(\w+):"), r"\1:cvar \2:"),
    (re.compile(r"^(\s*)@type\s+(\w+):"), r"\1:type \2:"),
    (re.compile(r"^(\s*)@raises?\s+([\w.]+):"), r"\1:raises \2:"),
    (re.compile(r"^(\s*)@returns?:"), r"\1:returns:"),
    (re.compile(r"^(\s*)@rtype:"), r"\1:rtype:"),
]
_MARKUP = re.compile(r"([CLIB])\{")
_WORD = re.compile(r"\w")


def _convert_markup(line: str) -> str:
    """Replace C{x}, L{x}, I{x} and B{x} (braces may nest, lines may break) with reST."""
    out, pos = [], 0
    while True:
        match = _MARKUP.search(line, pos)
        if match is None or (match.start() and _WORD.match(line[match.start() - 1])):
            if match is None:
                out.append(line[pos:])
                return "".join(out)
            out.append(line[pos:match.end()])
            pos = match.end()
            continue
        depth, end = 1, match.end()
        while end < len(line) and depth:
            depth += {"{": 1, "}": -1}.get(line[end], 0)
            end += 1
        if depth:  # unbalanced: leave the rest alone
            out.append(line[pos:])
            return "".join(out)
        content = line[match.end():end - 1]
        kind = match.group(1)
        if kind in "CL":
            text = f"``{content}``" if content.strip() == content and content else content
        elif kind == "I":
            text = f"*{content}*"
        else:
            text = f"**{content}**"
        before = line[pos:match.start()]
        if before and not before[-1].isspace() and before[-1] not in "-:/'\"<([{":
            text = "\\ " + text
        if end < len(line) and (_WORD.match(line[end]) or line[end] in "*`"):
            text += "\\ "
        out.append(before + text)
        pos = end


def epytext_to_rest(app, what, name, obj, options, lines):
    converted = []
    for line in lines:
        for pattern, replacement in _FIELDS:
            line = pattern.sub(replacement, line)
        converted.append(line)
    lines[:] = _convert_markup("\n".join(converted)).split("\n")


_ATTRS_DEFAULT = re.compile(r"attr_dict\['(\w+)'\]\.default")


def attrs_defaults(app, what, name, obj, options, signature, return_annotation):
    """Show an attrs class's real defaults, not the generated ``attr_dict[...]``."""
    if not signature or "attr_dict[" not in signature:
        return None
    import attrs

    defaults = {f.name: f.default for f in attrs.fields(obj)} if attrs.has(obj) else {}

    def default(match):
        value = defaults.get(match.group(1))
        return "..." if isinstance(value, attrs.Factory) else repr(value)

    return _ATTRS_DEFAULT.sub(default, signature), return_annotation


def setup(app):
    app.connect("autodoc-process-docstring", epytext_to_rest)
    app.connect("autodoc-process-signature", attrs_defaults)
