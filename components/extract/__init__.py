"""The extract step."""
