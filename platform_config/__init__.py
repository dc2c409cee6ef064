"""The platform's settings: the stage block of cfg.defaults.yml, the customer file and secrets.env,
validated by one model. Imported by the API, the pipeline, platform_db's migrations and the
stand-ins alike, so it imports none of them (and no Dagster)."""
