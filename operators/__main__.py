"""``python -m operators [--namespace NS ... | --all-namespaces] [--peering NAME | --standalone]``.

Runs the kopf operator with a liveness endpoint (``/healthz`` on ``--liveness``) and, unless
``--standalone``, peering: replicas that share a peering name agree that only one acts.
"""

from __future__ import annotations

import argparse
import logging


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m operators", description="Adept Kubernetes operator (kopf).")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="Watch this namespace (repeatable; globs ok)."
    )
    scope.add_argument(
        "-A", "--all-namespaces", action="store_true", help="Watch every namespace (cluster-wide RBAC)."
    )
    peer = p.add_mutually_exclusive_group()
    peer.add_argument(
        "--peering", default="adept", help="Peering object name shared by the replicas (default: adept)."
    )
    peer.add_argument("--standalone", action="store_true", help="No peering: for one replica or local runs.")
    p.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="Health probe endpoint URL ('' to disable)."
    )
    p.add_argument(
        "--priority", type=int, default=0, help="Peering priority; the highest active replica acts."
    )
    p.add_argument("-v", "--verbose", action="store_true", help="Debug logging.")
    args = p.parse_args(argv)
    if not args.namespace and not args.all_namespaces:
        import os

        ns = os.environ.get("POD_NAMESPACE")
        if not ns:
            p.error("give --namespace NS or --all-namespaces (or set POD_NAMESPACE)")
        args.namespace = [ns]
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import kopf

    import operators.handlers  # noqa: F401  (registers the handlers)

    kopf.run(
        clusterwide=args.all_namespaces,
        namespaces=args.namespace,
        standalone=args.standalone,
        peering_name=None if args.standalone else args.peering,
        priority=args.priority,
        liveness_endpoint=args.liveness or None,
    )


if __name__ == "__main__":
    main()
