"""The caption step."""
