"""The receiver's HTTP API (CONTRACT.md §4): FastAPI on uvicorn, thin over lib/receiver
and lib/inbox. `app.create_app` builds the state and includes the routers of `routers/`."""
