"""The HTTP layer: the only place that knows aiohttp's web API."""
