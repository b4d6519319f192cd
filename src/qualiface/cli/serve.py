"""``qualiface serve --model M``: an HTTP API (embed, quality, verify) over one model, on uvicorn."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from qualiface.cli.apps import app
from qualiface.cli.photos import DetectorOption, ModelOption, PreprocessingOption, detector_options, fail, open_model


@app.command("serve")
def serve(
    model: ModelOption,
    host: Annotated[str, typer.Option(help="Address to bind (127.0.0.1 = this machine only).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (0 = any free port).")] = 8000,
    max_mb: Annotated[float, typer.Option(help="Largest request body in MiB (larger: 413).")] = 10.0,
    max_megapixels: Annotated[
        float,
        typer.Option(
            help="Largest image in megapixels, checked from its header (larger: 400). A decode costs about 7 bytes "
            "per pixel while it runs: 16 MP (4600 x 3450) keeps a busy server near 500 MB."
        ),
    ] = 16.0,
    max_buffered_mb: Annotated[
        float, typer.Option(help="Request bodies held in memory at once, in MiB, over every request (more: 503).")
    ] = 64.0,
    preprocessing: PreprocessingOption = None,
    detector: DetectorOption = None,
    gallery: Annotated[
        Path | None,
        typer.Option(
            "--gallery",
            "-g",
            help="A gallery file (qualiface enroll) to serve POST /enroll and POST /search over; created by the "
            "first enrolment when missing.",
        ),
    ] = None,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="QUALIFACE_API_KEY",
            help="Require 'Authorization: Bearer KEY' or 'X-API-Key: KEY' on every endpoint but /health "
            "(prefer the environment variable: a command line is visible to other users).",
        ),
    ] = None,
    concurrency: Annotated[int, typer.Option(help="Requests decoded and run at once (worker threads).")] = 1,
    queue: Annotated[int, typer.Option(help="Requests waiting for a worker; more get 503 + Retry-After.")] = 64,
    body_timeout: Annotated[float, typer.Option(help="Seconds to receive a request body (then 408).")] = 30.0,
    header_timeout: Annotated[float, typer.Option(help="Seconds to receive a request head (then closed).")] = 10.0,
    keep_alive: Annotated[int, typer.Option(help="Seconds an idle connection is kept after an answer.")] = 5,
    max_connections: Annotated[int, typer.Option(help="Open connections at most (more get 503).")] = 1000,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option(
            help="A Host name to answer (repeatable; others get 400). Default: this machine's names when bound "
            "to loopback, any name otherwise."
        ),
    ] = None,
) -> None:
    """Serve GET /health, POST /embed, POST /quality (image bytes) and POST /verify (JSON, base64 images)."""
    from qualiface.serve import FaceService, ServerOptions, ServeSettings, create_app, run_server
    from qualiface.serve.guards import default_allowed_hosts
    from qualiface.serve.server import bind, exposure_warning, url_of

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        settings = ServeSettings(
            max_bytes=int(max_mb * 1024 * 1024),
            concurrency=concurrency,
            queue=queue,
            max_buffered=int(max_buffered_mb * 1024 * 1024),
            body_timeout=body_timeout,
            api_key=api_key,
            allowed_hosts=tuple(allowed_host) if allowed_host else default_allowed_hosts(host),
        )
        options = ServerOptions(
            host=host, port=port, keep_alive=keep_alive, header_timeout=header_timeout, max_connections=max_connections
        )
        if not 0 < max_megapixels < float("inf"):
            raise ValueError(f"--max-megapixels must be positive, got {max_megapixels}")
        finding = detector_options(detector)
        face_model = open_model(model, preprocessing=preprocessing)
        service = FaceService(face_model, max_pixels=max(1, int(max_megapixels * 1e6)), detector_options=finding)
        galleries = None
        if gallery is not None:
            from qualiface.serve.gallery_routes import GalleryService

            galleries = GalleryService(service, gallery)
        sock = bind(host, port, options.backlog)
    except ValueError as exc:
        raise fail(str(exc)) from None
    warning = exposure_warning(host, api_key)
    if warning:
        typer.echo(warning, err=True)
    key_note = "API key required" if api_key else "no API key"
    typer.echo(f"serving {face_model.name} on {url_of(sock)} ({key_note}; Ctrl-C to stop)")
    run_server(create_app(service, settings, gallery=galleries), options, sock)
