"""zndraw-joblib-server: the FastAPI router, models, sweeper and reference app."""

__all__: list[str] = []
