"""CLI of the caption step."""


def register(sub):
    """Nothing registered yet."""
