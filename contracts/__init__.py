"""Pydantic models for every boundary of the platform: HTTP bodies, the EDP API, the DTM, the manifest."""
