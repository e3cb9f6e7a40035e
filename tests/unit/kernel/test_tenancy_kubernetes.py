"""The cluster tenant store's Secrets: what the operator and the store write for each tenant."""

from __future__ import annotations

import base64

from adept.tenancy import hash_api_key
from adept.tenancy import kubernetes as K

NOW = "2026-01-01T00:00:00Z"


def test_the_key_secret_holds_the_key_and_says_which_key_it_is():
    owner = {"apiVersion": "adept.dev/v1alpha1", "kind": "Tenant", "metadata": {"name": "acme", "uid": "u-1"}}
    secret = K.build_key_secret("acme", "adept-secretvalue", namespace="ns", owner=owner, now=NOW)
    assert secret["metadata"]["name"] == K.key_secret_name("acme") == "adept-tenant-acme-key"
    assert K.decode_secret_value(secret, "api-key") == "adept-secretvalue"
    assert secret["metadata"]["labels"][K.LABEL_TENANT] == "acme"
    assert secret["metadata"]["annotations"] == {
        K.HASH_ANNOTATION: hash_api_key("adept-secretvalue"),
        K.PREFIX_ANNOTATION: "adept-secr",
        K.ISSUED_ANNOTATION: NOW,
    }
    ref = secret["metadata"]["ownerReferences"][0]
    assert ref == {
        "apiVersion": "adept.dev/v1alpha1",
        "kind": "Tenant",
        "name": "acme",
        "uid": "u-1",
        "controller": True,
        "blockOwnerDeletion": True,
    }


def test_what_gateways_read_carries_no_key():
    """The Tenant's annotations (all a gateway reads) identify the key without revealing it."""
    notes = K.key_annotations("adept-secretvalue", NOW)
    assert "adept-secretvalue" not in str(notes)
    assert notes[K.HASH_ANNOTATION] == hash_api_key("adept-secretvalue")


def test_key_secret_without_owner_uid_has_no_owner_reference():
    secret = K.build_key_secret(
        "acme", "adept-x", namespace="ns", owner={"kind": "Tenant", "metadata": {"name": "acme"}}
    )
    assert "ownerReferences" not in secret["metadata"]


def test_decode_secret_value_reads_data_and_string_data():
    assert K.decode_secret_value({"data": {"k": base64.b64encode(b"v").decode()}}, "k") == "v"
    assert K.decode_secret_value({"stringData": {"k": "w"}}, "k") == "w"
    assert K.decode_secret_value({}, "k") is None
