"""``python -m qualiface.cli ...`` (e.g. under ``torchrun -m qualiface.cli train CONFIG.yaml``)."""

from qualiface.cli.app import main

main()
