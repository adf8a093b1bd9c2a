"""The page's JavaScript and CSS, shipped as package data and inlined by ``loader``."""
