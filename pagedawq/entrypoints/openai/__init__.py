"""The OpenAI-compatible HTTP server (``pagedawq serve``): protocol models, routes, SSE, metrics."""
