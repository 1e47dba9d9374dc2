"""Readiness of the pipeline, Prometheus metrics (prom.py, needs prometheus-client: the `http`
extra) and a view of the whole deployment (deployment.py). Nothing is imported here, so that
the frontend's health check does not pull in prometheus-client."""
