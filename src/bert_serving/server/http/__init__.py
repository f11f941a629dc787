"""The HTTP edge: the ASGI app (`app`: the original's routes, OpenAI's embeddings, health,
readiness), its answers and error shapes (`responses`, `openai_api`), ``/metrics``, the
dashboard, and the uvicorn runner (`server`). Sees the server only through `Gateway`."""
