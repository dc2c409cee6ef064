"""The order intake API (Starlette, served by uvicorn)."""
