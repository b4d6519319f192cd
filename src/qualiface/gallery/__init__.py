"""Galleries: enrol photos of known people into quality-weighted identity templates, then search probe faces.

- :mod:`qualiface.gallery.store`: the versioned gallery file (``qualiface.gallery/1``), tied to the model's
  weights, read without pickle and within bounds, written atomically.
- :mod:`qualiface.gallery.templates`: how image qualities become weights and templates.
- :mod:`qualiface.gallery.enroll`: enrolment and appending.
- :mod:`qualiface.gallery.search`: exact blockwise top-k; :mod:`qualiface.gallery.faiss_index`: optional FAISS.
- :mod:`qualiface.gallery.identify`: top-k identities and a quality-aware decision per probe face.

The command line is ``qualiface enroll`` and ``qualiface search`` (docs/galleries.md).
"""

from qualiface.gallery.enroll import EnrollReport, add_images, enroll, rebuild_templates
from qualiface.gallery.faiss_index import INDEX_KINDS, FaissIndex
from qualiface.gallery.identify import Candidate, GalleryIndex, ProbeResult, search_embeddings, search_faces
from qualiface.gallery.search import top_k
from qualiface.gallery.store import GALLERY_FORMAT, Gallery, GalleryError, check_model, load_gallery, save_gallery
from qualiface.gallery.templates import Weighting, image_weights, pool_templates, unit_quality

__all__ = [
    "GALLERY_FORMAT",
    "INDEX_KINDS",
    "Candidate",
    "EnrollReport",
    "FaissIndex",
    "Gallery",
    "GalleryError",
    "GalleryIndex",
    "ProbeResult",
    "Weighting",
    "add_images",
    "check_model",
    "enroll",
    "image_weights",
    "load_gallery",
    "pool_templates",
    "rebuild_templates",
    "save_gallery",
    "search_embeddings",
    "search_faces",
    "top_k",
    "unit_quality",
]
