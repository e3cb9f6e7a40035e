"""Fine-tuning as tenants see it: uploaded files, jobs, their events and checkpoints.

The kernel's part of the OpenAI-compatible fine-tuning API (the HTTP layer is
``services/gateway/finetuning*.py``):

- ``examples``: what a training line must look like — the one parser that both upload
  validation and ``training/data.py`` use, so a file that uploads is a file training reads;
- ``files``: a tenant's uploaded files, in a directory or an fsspec store (``files_store_uri``);
- ``jobs``: the stored job record, and the events and checkpoints derived from it;
- ``store``: job records in SQLite (embedded) — ``kube_store``: as ``FineTuneJob`` resources
  (cluster), which the operator drives;
- ``service``: ``FineTuning``, the one owner of every job operation and state change, with
  ``plan`` (request → training config), ``limits`` (job limits) and ``promotion`` (eval-gated
  promotion of a job's version, every job path);
- ``events``: the structured events a training run writes, read the same way by both executors;
- ``executors`` (a local process, Ray Jobs) and ``runner``, the driver that moves jobs through the
  state machine with what an executor saw.
"""
