"""What the platform and the delivered edge stack both stand on: the layered settings loader, the
JSON body reader and problem responses. Nothing here imports Dagster, AWS or a database, so the
edge images carry it without the platform's dependencies."""
