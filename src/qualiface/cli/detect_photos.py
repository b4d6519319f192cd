"""``qualiface detect PHOTOS: face boxes, five landmarks and scores (CSV/JSON).``"""

from qualiface.cli.apps import app  # noqa: F401  (commands are attached here)
