"""Generates the documentation site's references from the code (`bash scripts/docs`)."""
