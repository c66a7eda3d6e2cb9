"""The admin REST API (FastAPI), one of three faces over tollway.services."""

from tollway.admin.api import build_admin_api

__all__ = ["build_admin_api"]
