"""The one-machine stack behind ``make run``: stand-ins, the API and Dagster as child processes."""
