"""Settings loader and the ConfigurableResources the pipeline uses."""
