"""CLI of the categorize step."""


def register(sub):
    """Nothing registered yet."""
