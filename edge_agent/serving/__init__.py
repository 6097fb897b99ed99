"""Serving: the model host (one owner of loaded models) and the OpenAI-compatible HTTP API."""
