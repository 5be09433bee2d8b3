"""Render livegate result documents: one self-contained HTML report, a Markdown summary, JUnit XML.

Renderers read result documents (plain dicts loaded from JSON) and never recompute a statistic or
read a data file; writing the output is the caller's job (the CLI uses datasets.io.write_atomic).
A document that is not a livegate result raises datasets.errors.InputError (exit code 2).
"""
import importlib

#: renderer -> module; imported on first use, so that `livegate evaluate`, which prints only the
#: terminal table, does not pay for Jinja2 and matplotlib (about a second at start-up)
_RENDERERS = {"document_kind": "documents", "render_html": "chapters", "render_junit": "junit",
              "render_markdown": "chapters"}

__all__ = sorted(_RENDERERS)


def __getattr__(name: str):
    if name in _RENDERERS:
        return getattr(importlib.import_module(f".{_RENDERERS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
