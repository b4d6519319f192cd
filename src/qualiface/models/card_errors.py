"""The error of model cards and their records (kept apart so that every card module can raise it)."""

from qualiface.errors import InputError


class CardError(InputError):
    """A model card, preprocessing specification or threshold that is not valid; names the field."""
