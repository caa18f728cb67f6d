"""Sphinx configuration for the multiuser-spawner documentation."""

import io
import re
from pathlib import Path

from docutils.core import publish_doctree
from traitlets import TraitType

project = "multiuser-spawner"
author = "multiuser-spawner contributors"
copyright = "multiuser-spawner contributors"

extensions = ["myst_parser", "autodoc_traits", "sphinx.ext.autodoc"]
source_suffix = {".md": "markdown", ".rst": "restructuredtext"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

myst_heading_anchors = 3

html_theme = "alabaster"
html_title = "multiuser-spawner"
# _static holds screenshots the browser tests refresh; an absent directory must not break the build.
html_static_path = ["_static"] if (Path(__file__).parent / "_static").is_dir() else []

# Sphinx's own roles and directives are unknown to plain docutils; they are not what the check below looks for.
_SPHINX_ONLY = ("Unknown interpreted text role", "Unknown directive type", 'No role entry for "')
# docutils' report lines: "<string>:3: (ERROR/3) Unexpected indentation."
_MESSAGE = re.compile(r"^<string>:\d+: \((?:WARNING|ERROR|SEVERE)/\d\) (.*)$", re.MULTILINE)


def _rst_problems(text: str) -> list[str]:
    """What plain docutils reports about ``text``; nothing when the text needs Sphinx itself to be read."""
    stream = io.StringIO()
    try:
        publish_doctree(text, settings_overrides={"report_level": 2, "halt_level": 5, "warning_stream": stream})
    except Exception:
        # Sphinx's directives (versionadded, ...) work only inside a Sphinx build; Sphinx checks such text itself.
        return []
    messages = _MESSAGE.findall(stream.getvalue())
    return [message for message in messages if not any(known in message for known in _SPHINX_ONLY)]


def _plain_text_for_foreign_help(app, what, name, obj, options, lines):
    """Show an inherited setting's help as preformatted text when it is not valid reStructuredText.

    Some help strings of DockerSpawner's settings hold code samples without a literal block; as they are, they
    would make this build warn (and fail under -W). This package's own help strings are never touched, so a
    mistake in them still fails the build.
    """
    if not isinstance(obj, TraitType) or not lines:
        return
    owner = getattr(obj, "this_class", None)
    if owner is None or owner.__module__.split(".")[0] == "multiuser_spawner":
        return
    if _rst_problems("\n".join(lines)):
        lines[:] = ["::", ""] + [f"   {line}" if line else "" for line in lines] + [""]


def setup(app):
    app.connect("autodoc-process-docstring", _plain_text_for_foreign_help)
