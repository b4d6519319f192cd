"""``python -m qualiface ...``: the ``qualiface`` command line (``python -m qualiface tour`` is the short tour)."""

from qualiface.cli.app import main

if __name__ == "__main__":
    main()
