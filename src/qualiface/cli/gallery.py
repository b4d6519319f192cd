"""``qualiface enroll / qualiface search: galleries of quality-weighted identity templates.``"""

from qualiface.cli.apps import app  # noqa: F401  (commands are attached here)
