"""The categorize step."""
