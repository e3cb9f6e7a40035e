"""The training cluster demands its token: the Jobs SDK and ``ray job submit`` without it are refused.

The head is a local Ray started with ``RAY_AUTH_MODE=token`` (tests/ray_head.py), as KubeRay's
``authOptions`` starts the chart's clusters. This process runs with Ray auth off, as a client
that was never given the token does.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.ray_head import client_env

pytestmark = pytest.mark.integration


def _refused(fn) -> bool:
    try:
        fn()
    except Exception:  # the SDK raises RuntimeError/ConnectionError with the HTTP status in the text
        return True
    return False


@pytest.mark.parametrize("token", [None, "0" * 64], ids=["no token", "wrong token"])
def test_a_submission_without_the_token_is_refused(ray_head, token):
    before = {j.submission_id for j in ray_head.client().list_jobs()}
    assert _refused(lambda: ray_head.client(token).submit_job(entrypoint=f"{sys.executable} -c pass"))
    assert {j.submission_id for j in ray_head.client().list_jobs()} == before


def test_ray_job_submit_needs_ray_auth_mode_token(ray_head, tmp_path):
    """What the README and the chart's NOTES say: ``ray job submit`` sends the token only in token mode."""
    cmd = [
        "ray",
        "job",
        "submit",
        "--address",
        ray_head.address,
        "--no-wait",
        "--",
        sys.executable,
        "-c",
        "pass",
    ]
    cmd[0] = str(__import__("pathlib").Path(sys.executable).with_name("ray"))
    # A user's shell without RAY_AUTH_MODE (and, here, no ~/.ray/auth_token to fall back on): refused.
    plain = subprocess.run(
        cmd, env=client_env(HOME=str(tmp_path)), capture_output=True, text=True, timeout=120
    )
    assert plain.returncode != 0 and "Authentication required" in plain.stdout + plain.stderr
    # With the mode and the cluster's token, as documented: accepted.
    ok = subprocess.run(
        cmd,
        env=client_env(HOME=str(tmp_path), RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=ray_head.token),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
