"""The API layer: the only code that speaks HTTP (httpx) to the Containers API."""
