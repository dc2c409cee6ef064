"""What the assets, the sensors and the API agree on about an order's runs: the orders partitions,
the asset keys and selections, the run tags, and how a failed step's cause is read."""
