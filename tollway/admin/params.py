"""Bounds shared by the admin routes' parameters (the database's integer range)."""

from __future__ import annotations

ID_MAX = 2**31 - 1
