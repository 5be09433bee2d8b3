"""Render livegate result documents: one self-contained HTML report, a Markdown summary, JUnit XML.

Renderers read result documents (plain dicts loaded from JSON) and never recompute a statistic or
read a data file; writing the output is the caller's job (the CLI uses datasets.io.write_atomic).
A document that is not a livegate result raises datasets.errors.InputError (exit code 2).
"""
from .documents import document_kind
from .html import render_html
from .junit import render_junit
from .markdown import render_markdown

__all__ = ["document_kind", "render_html", "render_junit", "render_markdown"]
