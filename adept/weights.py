"""Model weights on a machine: the one place Adept downloads them, and the wait until they are there.

Serving and training resolve models offline only (``adept.models.resolve_model``). Weights arrive in
exactly two explicit ways:

- ``adept models pull --download REF...`` — on a laptop with network, or as the chart's weights Job
  that fills the cluster's model cache. The Hugging Face hub client fetches into ``HF_HOME``; files
  already there are not fetched again, so a second run costs one metadata call (none for a ref
  pinned to a commit with ``@REV``). ``HF_TOKEN`` (gated models) and ``HF_ENDPOINT`` (a hub mirror)
  are read from the environment by the hub client.
- copying a filled cache (air-gapped clusters: ``modelCache.existingClaim``).

``wait_for_models`` is what the chart's init containers run: it polls the offline resolution until
every model resolves. The hub client refuses a snapshot whose cached file listing shows missing files,
so a download still in progress counts as missing, not as ready.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from adept.errors import InvalidRequest, NotFound, PermissionDenied, Unavailable
from adept.models import (
    BUNDLED_PREFIX,
    _bundled,
    _package_dir,
    is_local_ref,
    parse_hub_ref,
    resolve_model,
)

PROGRESS_INTERVAL_S = 10.0


def is_hub_ref(ref: str) -> bool:
    """True when ``ref`` names a hub repository (the only kind of reference that is ever downloaded)."""
    ref = ref.strip()
    return not ref.startswith(BUNDLED_PREFIX) and not is_local_ref(ref)


def _line_progress(out: IO[str], interval: float) -> type:
    """A tqdm class that writes whole lines at most every ``interval`` seconds.

    The hub client's own bars switch off without a terminal and redraw one line with ``\\r`` otherwise;
    neither shows in ``kubectl logs``. A class that is not the hub's tqdm subclass is used as given.
    """
    from tqdm.auto import tqdm

    class LineProgress(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs.pop("name", None)
            kwargs.update(file=out, mininterval=interval, dynamic_ncols=False, ncols=100)
            super().__init__(*args, **kwargs)

        def display(self, msg: str | None = None, pos: int | None = None) -> bool:
            out.write((msg or str(self)).strip() + "\n")
            out.flush()
            return True

    return LineProgress


def download_model(
    ref: str, *, out: IO[str] | None = None, progress_interval: float = PROGRESS_INTERVAL_S
) -> Path:
    """Fetch a hub model (optionally ``@REVISION``) into the Hugging Face cache; return its snapshot directory.

    Bundled models and local directories need no download: they are resolved as ``resolve_model`` does.

    Raises:
        NotFound: no such repository or revision on the hub (or it is gated and the token lacks access).
        PermissionDenied: the hub refused the token.
        InvalidRequest: downloads are disabled in this environment (``HF_HUB_OFFLINE=1``).
        Unavailable: the hub could not be reached or failed.
    """
    ref = ref.strip()
    if not is_hub_ref(ref):
        return resolve_model(ref)
    import httpx2
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        HFValidationError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    repo_id, revision = parse_hub_ref(ref)
    if constants.HF_HUB_OFFLINE:
        raise InvalidRequest(f"HF_HUB_OFFLINE=1 forbids downloads: unset it to fetch {ref!r}")
    progress = _line_progress(out or sys.stderr, progress_interval)
    where = constants.ENDPOINT
    try:
        return Path(snapshot_download(repo_id, revision=revision, tqdm_class=progress))
    except HFValidationError:
        raise InvalidRequest(f"not a model reference: {ref!r} (use ORG/NAME or ORG/NAME@REVISION)") from None
    except GatedRepoError:
        raise NotFound(
            f"model {repo_id!r} is gated on {where}: accept its terms and set HF_TOKEN to a token with access",
            code="model_not_found",
        ) from None
    except RepositoryNotFoundError:
        raise NotFound(
            f"model {repo_id!r} not found on {where} (a private repository needs HF_TOKEN)",
            code="model_not_found",
        ) from None
    except RevisionNotFoundError:
        raise NotFound(
            f"revision {revision!r} of {repo_id!r} not found on {where}", code="model_not_found"
        ) from None
    except OfflineModeIsEnabled:
        raise InvalidRequest(f"HF_HUB_OFFLINE=1 forbids downloads: unset it to fetch {ref!r}") from None
    except HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status in (401, 403):
            raise PermissionDenied(f"{where} refused the token for {repo_id!r} (HTTP {status})") from None
        raise Unavailable(f"{where} failed while fetching {ref!r}: HTTP {status}") from None
    except LocalEntryNotFoundError as e:
        # The hub client's way of saying the hub was unreachable and nothing usable is cached.
        cause = e.__cause__ or e
        raise Unavailable(f"cannot reach {where} to fetch {ref!r}: {type(cause).__name__}: {cause}") from None
    except (httpx2.TransportError, OSError) as e:
        raise Unavailable(f"cannot fetch {ref!r} from {where}: {type(e).__name__}: {e}") from None


def missing_reason(ref: str) -> str | None:
    """Why ``ref`` cannot be loaded offline right now, or ``None`` when it can.

    Bundled models count as present when their package is installed (the GGUF conversion happens at
    first use, in the replica).
    """
    ref = ref.strip()
    try:
        if ref.startswith(BUNDLED_PREFIX):
            _, bundled = _bundled(ref)
            _package_dir(bundled.package)
        else:
            resolve_model(ref)
    except NotFound as e:
        return e.message
    return None


def wait_for_models(
    refs: Sequence[str],
    *,
    timeout: float = 0,
    interval: float = 10,
    report: Callable[[str], object] = print,
    hint: str = "",
) -> None:
    """Return once every model in ``refs`` resolves offline; report what is missing every ``interval`` s.

    Raises:
        InvalidRequest: a reference is malformed (waiting would never end).
        Unavailable: ``timeout`` (seconds, 0 = none) passed with models still missing.
    """
    for ref in refs:
        if ref.startswith(BUNDLED_PREFIX):
            _bundled(ref)  # an unknown bundled name never appears
        elif is_hub_ref(ref):
            parse_hub_ref(ref)
    started = time.monotonic()
    while True:
        missing = {ref: why for ref in refs if (why := missing_reason(ref))}
        if not missing:
            report(f"ready: {', '.join(refs)}")
            return
        waited = time.monotonic() - started
        if timeout and waited >= timeout:
            raise Unavailable(f"models still missing after {waited:.0f} s: {'; '.join(missing.values())}")
        for why in missing.values():
            report(f"waiting ({waited:.0f} s): {why}" + (f" — {hint}" if hint else ""))
        time.sleep(interval)
