"""Dagster-free domain functions: what the pipeline builds and publishes."""
