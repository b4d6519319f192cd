"""Entry point of the ``qualiface`` command."""

from qualiface.cli import (  # noqa: F401  (register the commands)
    align,
    calibrate,
    data_pack,
    demo,
    detect_photos,
    embed,
    eval_benchmark,
    eval_edc,
    eval_identify,
    eval_ijb,
    eval_report,
    eval_verify,
    export,
    gallery,
    info,
    quality,
    serve,
    train,
    verify,
)
from qualiface.cli.apps import app


def main() -> None:
    """Run the ``qualiface`` command line."""
    app()


if __name__ == "__main__":
    main()
