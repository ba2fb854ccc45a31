"""Getting a benchmark's data into the local layout its loader reads: the pinned hub revision (`hub_data`), or a
benchmark's own `prepare` step (`deltarubric eval prepare`) for data the hub does not hold in a usable form.

Both fail at once with what is missing and what to pass: no long retries against an unreachable hub.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from deltarubric.eval.registry import Benchmark

HUB_PROBE_TIMEOUT_S = 5.0


def hub_data(bench: Benchmark) -> Path:
    """The benchmark's pinned hub revision: from the Hugging Face cache when it is there, else downloaded once. Offline
    (HF_HUB_OFFLINE=1) or with the hub unreachable, a ValueError says so at once and names --data-dir."""
    if bench.hub is None:
        make = (
            f" (make one from the downloaded release: deltarubric eval prepare {bench.name} --src DOWNLOAD --out DIR)"
            if bench.prepare
            else ""
        )
        raise ValueError(f"{bench.name} is not on the hub in a usable form: pass --data-dir{make}; see docs/eval.md")
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError as e:  # pragma: no cover - a dependency of transformers
        raise ImportError("downloading benchmark data needs huggingface_hub: pip install 'deltarubric[hub]'") from e

    source = f"{bench.hub.repo}@{bench.hub.revision[:8]}"
    pull = {"repo_type": "dataset", "revision": bench.hub.revision, "allow_patterns": list(bench.hub.patterns)}
    with contextlib.suppress(OSError, ValueError):  # not cached (LocalEntryNotFoundError): download below
        return Path(snapshot_download(bench.hub.repo, local_files_only=True, **pull))
    if constants.HF_HUB_OFFLINE:
        raise ValueError(
            f"{bench.name}: no --data-dir given and the hub is off (HF_HUB_OFFLINE=1), with no cached copy of "
            f"{source}: pass --data-dir DIR with the benchmark's files (layout: docs/eval.md), or unset HF_HUB_OFFLINE"
        )
    import httpx

    try:
        httpx.head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S)
    except (httpx.HTTPError, httpx.InvalidURL, OSError) as e:
        raise ValueError(
            f"{bench.name}: no --data-dir given and the hub ({constants.ENDPOINT}) cannot be reached "
            f"({type(e).__name__}: {e}), so {source} cannot be downloaded: pass --data-dir DIR with the benchmark's "
            "files (layout: docs/eval.md)"
        ) from e
    try:
        return Path(snapshot_download(bench.hub.repo, **pull))
    except Exception as e:  # whatever the transport raised, the user needs the same advice
        raise ValueError(
            f"{bench.name}: downloading {source} failed ({type(e).__name__}: {e}); pass --data-dir DIR with the "
            "benchmark's files (layout: docs/eval.md)"
        ) from e
