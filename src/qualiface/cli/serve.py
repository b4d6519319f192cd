"""``qualiface serve --model M``: a local HTTP API (embed, quality, verify) over one model."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import PreprocessingOption, open_model


@app.command("serve")
def serve(
    model: Annotated[str, typer.Option("--model", "-m", help="Model file, run directory or ONNX recognizer.")],
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1 = this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port).")] = 8000,
    max_mb: Annotated[float, typer.Option(help="Largest request body in MiB.")] = 10.0,
    max_megapixels: Annotated[float, typer.Option(help="Largest image in megapixels.")] = 40.0,
    preprocessing: PreprocessingOption = None,
) -> None:
    """Serve GET /health, POST /embed, POST /quality (image bytes) and POST /verify (JSON, base64 images)."""
    from qualiface.serve import FaceService, make_server

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    face_model = open_model(model, preprocessing=preprocessing)
    service = FaceService(face_model, max_pixels=int(max_megapixels * 1e6))
    server = make_server(service, host, port, max_bytes=int(max_mb * 1024 * 1024))
    bound_host, bound_port = server.server_address[:2]
    assert isinstance(bound_host, str)  # getsockname() of an AF_INET / AF_INET6 socket (the stub allows bytes)
    typer.echo(f"serving {face_model.name} on http://{bound_host}:{bound_port} (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
