"""zndraw-joblib-client: the worker and submitter SDK of zndraw-joblib."""

__all__: list[str] = []
