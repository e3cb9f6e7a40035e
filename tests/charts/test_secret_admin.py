"""Admin key Secret: generated when absent, looked up on upgrade, or brought by the user."""

import base64
import hashlib
import re

import pytest

from tests.charts.chart_render import CHART_DIR, find, one, render_objects

pytestmark = pytest.mark.charts


def test_generated_admin_key(default_objects):
    secret = one(default_objects, "Secret", "adept-admin")
    key = base64.b64decode(secret["data"]["admin-key"]).decode()
    assert re.fullmatch(r"adept-admin-[A-Za-z0-9]{40}", key)
    digest = base64.b64decode(secret["data"]["admin-key-sha256"]).decode()
    assert digest == hashlib.sha256(key.encode()).hexdigest()  # what the gateway compares against
    assert secret["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"


def test_key_is_read_back_on_upgrade():
    # Offline rendering has no cluster, so `lookup` returns nothing; check the template reuses what it finds.
    source = (CHART_DIR / "templates" / "secret-admin.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in source
    assert "b64dec" in source


def test_existing_secret_is_used_instead():
    objs = render_objects({"auth": {"existingSecret": "my-admin", "secretKey": "key", "hashKey": "key-sha"}})
    assert not find(objs, "Secret", "adept-admin")
    env = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["env"]
    ref = next(e for e in env if e["name"] == "ADEPT_GATEWAY_ADMIN_KEY")["valueFrom"]["secretKeyRef"]
    assert ref == {"name": "my-admin", "key": "key"}
