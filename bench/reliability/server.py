"""The in-process platform as its own process, for kill tests: ``python -m bench.reliability.server``.

Writes its URL to ``--url-file`` once it serves; the admin key comes from ``ADEPT_ADMIN_KEY``.
SIGTERM stops it cleanly; SIGKILL is what the crash scenarios send.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.reliability.server")
    p.add_argument("--data-dir", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--url-file", required=True)
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from bench.reliability.inproc import serving_config, start_inprocess

    platform = start_inprocess(serving_config(Path(args.data_dir), args.model), os.environ["ADEPT_ADMIN_KEY"])
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    tmp = Path(args.url_file + ".tmp")
    tmp.write_text(platform.url)
    tmp.rename(args.url_file)
    stop.wait()
    platform.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
