"""The local inference server: OpenAI-compatible embeddings and every task as an endpoint, with
dynamic batching, overload protection and an orderly stop (`mlx-albert serve`, cli/serve.py). Needs
the `[serve]` extra (Starlette, uvicorn)."""
