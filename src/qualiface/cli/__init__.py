"""The ``qualiface`` command line (Typer); nothing outside this package imports Typer."""
