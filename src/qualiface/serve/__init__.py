"""An HTTP API over one model: embed, quality, verify (FastAPI on uvicorn).

Endpoints (JSON answers; errors are ``{"error": message}`` with a 4xx status, 500 for a server fault):

* ``GET /health``: the model's name, embedding size, quality method, threshold and card.
* ``POST /embed`` and ``POST /quality``: the body is one encoded image (JPEG, PNG, ...); ``?aligned=1`` takes a
  112x112 aligned crop as it is, ``?all_faces=1`` returns every face. Answer: ``{"model": stamp, "faces":
  [{"face_index", "embedding", "quality", "box", "score"}, ...]}``.
* ``POST /verify``: a JSON body ``{"a": base64 image, "b": base64 image, "threshold": optional float or
  "learned"}``; answer as :class:`qualiface.use.Comparison`. Without a threshold the model's calibrated one
  decides (none: ``"undecided"``); a threshold learned in training (UniTSFace) decides only with
  ``"threshold": "learned"``.
* ``GET /openapi.json``: the schema of all of them (:mod:`qualiface.serve.schemas`).

Refusals: 400 bad input (not an image, over the pixel limit, a bad field, a non-finite threshold, a bad
``Content-Length``, a ``Host`` not served), 401 missing or wrong API key, 404 unknown path, 405 wrong method,
408 body too slow, 413 body too large, 422 no face, 503 busy (with ``Retry-After``).

Modules: :mod:`~qualiface.serve.service` (the model behind the endpoints, no HTTP), :mod:`~qualiface.serve.app`
(the endpoints), :mod:`~qualiface.serve.limits` (body and queue bounds), :mod:`~qualiface.serve.guards` (API key,
``Host``), :mod:`~qualiface.serve.logs` (the escaped access log), :mod:`~qualiface.serve.answers` (valid JSON
only), :mod:`~qualiface.serve.server` (uvicorn and its connection bounds).
"""

from qualiface.serve.app import ServeSettings, create_app
from qualiface.serve.server import ServerOptions, run_server, serving_in_thread
from qualiface.serve.service import FaceService, RequestError

__all__ = [
    "FaceService",
    "RequestError",
    "ServeSettings",
    "ServerOptions",
    "create_app",
    "run_server",
    "serving_in_thread",
]
