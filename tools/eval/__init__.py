"""``adept eval``: measure base, base+RAG, adapter and adapter+RAG on a tenant's questions, and recommend one.

Modules: ``dataset`` (eval-set format and validation), ``metrics`` (pure metric functions and
bootstrap), ``client`` (the tenant's public HTTP API), ``routes`` (the four routes and their
prerequisites), ``scoring`` (per-question scores, per-route summaries), ``recommend`` (the
decision and its reasons), ``report`` (terminal, JSON, Markdown, PNG), ``runner`` (the whole run).
"""
