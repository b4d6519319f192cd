"""``qualiface eval benchmark: recognition and quality of one or several models on a labelled set, one report.``"""

from qualiface.cli.apps import app  # noqa: F401  (commands are attached here)
