"""The cluster tenant store's Secrets: what the operator and the store write for each tenant."""

from __future__ import annotations

import base64

from adept.tenancy import hash_api_key
from adept.tenancy import kubernetes as K

NOW = "2026-01-01T00:00:00Z"


def test_build_key_secrets_store_key_and_hash_separately():
    owner = {"apiVersion": "adept.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme", "uid": "u-1"}}
    key_secret, hash_secret = K.build_key_secrets(
        "acme", "adept-secretvalue", namespace="ns", owner=owner, now=NOW
    )
    assert key_secret["metadata"]["name"] == K.key_secret_name("acme") == "adept-tenant-acme-key"
    assert hash_secret["metadata"]["name"] == K.hash_secret_name("acme")
    assert K.decode_secret_value(key_secret, "api-key") == "adept-secretvalue"
    assert K.decode_secret_value(hash_secret, "sha256") == hash_api_key("adept-secretvalue")
    assert "adept-secretvalue" not in str(hash_secret)  # gateways never see the key itself
    assert hash_secret["metadata"]["labels"][K.LABEL_COMPONENT] == K.HASH_SECRET_COMPONENT
    assert key_secret["metadata"]["labels"][K.LABEL_TENANT] == "acme"
    assert key_secret["metadata"]["annotations"]["adept.dev/key-prefix"] == "adept-secr"
    ref = key_secret["metadata"]["ownerReferences"][0]
    assert ref == {
        "apiVersion": "adept.dev/v1alpha1",
        "kind": "Tenant",
        "name": "acme",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_key_secrets_without_owner_uid_have_no_owner_reference():
    key_secret, _ = K.build_key_secrets(
        "acme", "adept-x", namespace="ns", owner={"kind": "Tenant", "metadata": {"name": "acme"}}
    )
    assert "ownerReferences" not in key_secret["metadata"]


def test_decode_secret_value_reads_data_and_string_data():
    assert K.decode_secret_value({"data": {"k": base64.b64encode(b"v").decode()}}, "k") == "v"
    assert K.decode_secret_value({"stringData": {"k": "w"}}, "k") == "w"
    assert K.decode_secret_value({}, "k") is None
