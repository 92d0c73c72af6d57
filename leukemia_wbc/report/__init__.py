"""Reports of experiments: a self-contained HTML file, Markdown and JSON beside it, figures.

Nothing in the library imports this package but the commands and the demo.
"""

from __future__ import annotations

from .html import ReportFiles, environment, write_report

__all__ = ["ReportFiles", "environment", "write_report"]
