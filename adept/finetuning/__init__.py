"""Fine-tuning as tenants see it: uploaded files, jobs, their events and checkpoints.

The kernel's part of the OpenAI-compatible fine-tuning API (the HTTP layer is
``services/gateway/finetuning*.py``):

- ``examples``: what a training line must look like — the one parser that both upload
  validation and ``training/data.py`` use, so a file that uploads is a file training reads;
- ``files``: a tenant's uploaded files, in a directory or an fsspec store (``files_store_uri``);
- ``jobs``: the stored job record, and the events and checkpoints derived from it;
- ``store``: job records in SQLite (embedded) — ``kube_store``: as ``FineTuneJob`` resources
  (cluster), which the operator drives;
- ``progress``: what a training run's log says (steps, losses, the published adapter, errors),
  read the same way by the embedded runner and the operator;
- ``runner``: the embedded platform's reconciler, which runs each job as a supervised
  ``python -m training.finetune`` process on the platform's Ray.
"""
