"""The order pipeline as Dagster assets, and the one Definitions object."""
