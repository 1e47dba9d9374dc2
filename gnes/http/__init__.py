"""`gnes http`: the HTTP API over the pipeline (FastAPI with uvicorn)."""
