"""The queue's logic, as async functions taking a session or unit of work (no FastAPI here).

Services raise core problem types; the routes turn them into RFC 9457 responses.
"""
