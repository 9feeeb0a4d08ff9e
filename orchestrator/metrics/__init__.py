"""Prometheus metrics of a job: the exporter (a controller callback) and what it reads."""
