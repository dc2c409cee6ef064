"""platform_instance: pieces of the Dagster instance the platform configures.

The instance files (local_stack/dagster.local.yaml, deploy/dagster.beta.yaml) name these classes by
module and class, as Dagster's own ones; they are imported by every process that loads the
instance (webserver, daemon, code server, run worker).
"""
