"""Data files shipped with the package (the bundled price table)."""
