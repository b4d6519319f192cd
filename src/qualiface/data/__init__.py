"""Readers for evaluation data (verification packs, pair lists, benchmark meta files). Import the submodules
directly (e.g. ``qualiface.data.bin_pairs``); nothing heavy is imported here."""
