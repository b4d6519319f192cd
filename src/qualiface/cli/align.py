"""``qualiface align PHOTOS --out DIR|FILE.rec: aligned 112x112 crops or a RecordIO pack from photos.``"""

from qualiface.cli.apps import app  # noqa: F401  (commands are attached here)
