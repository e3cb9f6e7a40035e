"""Failures of calls to other deployments are classified by type, with Ray's real exception classes.

Ray Serve raises these in the caller (a full queue, a deployment that failed to deploy, a replica
that died); an error raised inside a replica arrives wrapped in ``RayTaskError``. No cluster is
needed to build them, so the mapping is tested here with the classes themselves.
"""

from __future__ import annotations

import logging

import pytest
from ray.exceptions import ActorDiedError, ActorUnavailableError, GetTimeoutError, RayTaskError
from ray.serve._private.common import DeploymentID
from ray.serve.exceptions import (
    BackPressureError,
    DeploymentUnavailableError,
    ReplicaUnavailableError,
    RequestCancelledError,
)

from adept.errors import InvalidRequest, NotFound, RateLimited, Unavailable
from services.gateway.backends import as_adept_error


def wrapped(cause: BaseException) -> RayTaskError:
    """What a caller receives when ``cause`` is raised inside a replica."""
    error = RayTaskError(
        "LLMDeployment.generate", "Traceback: ...", cause, proctitle="replica", pid=1, ip="10.0.0.1"
    )
    return error.make_dual_exception_instance()


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (BackPressureError(num_queued_requests=9, max_queued_requests=8), 503, "overloaded"),
        (DeploymentUnavailableError(DeploymentID(name="llm", app_name="adept")), 503, "unavailable"),
        (ReplicaUnavailableError("llm#abc"), 503, "unavailable"),
        (ActorDiedError(), 503, "unavailable"),
        (ActorUnavailableError("node lost", None), 503, "unavailable"),
        (RequestCancelledError("req-1"), 503, "cancelled"),
        (GetTimeoutError("timed out"), 503, "timeout"),
    ],
)
def test_serve_failures_map_to_typed_errors(exc, status, code):
    err = as_adept_error(exc, "LLM deployment")
    assert isinstance(err, Unavailable)
    assert (err.status, err.code) == (status, code)
    assert "LLM deployment" in err.message


def test_backpressure_keeps_its_status_and_retry_after():
    busy = as_adept_error(BackPressureError(9, 8, status_code=503, retry_after_s=2.5), "LLM deployment")
    assert busy.headers() == {"Retry-After": "3"}
    limited = as_adept_error(BackPressureError(9, 8, status_code=429, retry_after_s=4), "LLM deployment")
    assert isinstance(limited, RateLimited) and limited.status == 429
    assert limited.headers() == {"Retry-After": "4"} and limited.code == "overloaded"
    assert as_adept_error(BackPressureError(9, 8), "LLM deployment").headers() == {}


@pytest.mark.parametrize(
    "cause", [InvalidRequest("prompt is too long", param="messages"), NotFound("no adapter")]
)
def test_an_adept_error_raised_in_a_replica_reaches_the_client_as_itself(cause):
    err = as_adept_error(wrapped(cause), "LLM deployment")
    assert err is cause  # the replica's error, not the Ray wrapper around it
    assert err.to_openai() == cause.to_openai()


def test_a_serve_failure_inside_a_nested_call_is_found_through_the_wrapper():
    nested = wrapped(BackPressureError(3, 2))
    assert as_adept_error(nested, "retrieval deployment").code == "overloaded"


def test_classification_is_by_type_not_by_name(caplog):
    class BackPressureError(Exception):  # same name as Serve's, unrelated type
        pass

    class QueueFull(ReplicaUnavailableError):  # another name, Serve's type
        pass

    with caplog.at_level(logging.ERROR, logger="services.gateway.backends"):
        impostor = as_adept_error(BackPressureError("queue full"), "LLM deployment")
    assert impostor.code == "unavailable" and "failed (BackPressureError)" in impostor.message
    assert caplog.records, "an unknown failure is logged with its traceback"
    assert as_adept_error(QueueFull("r"), "LLM deployment").message.startswith("a replica of the LLM")


def test_an_unknown_failure_is_a_generic_503_that_names_the_deployment():
    err = as_adept_error(wrapped(KeyError("x")), "retrieval deployment")
    assert isinstance(err, Unavailable) and err.status == 503
    assert err.message.startswith("the retrieval deployment failed (RayTaskError(KeyError))")
