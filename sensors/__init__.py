"""Sensors that move orders along: new orders, finished EDP jobs, newly landed APKs."""
