"""One kind of error from every object store: a backend's own exception as the OSError fsspec means.

fsspec's backends do not agree on how a refused request looks: s3fs raises PermissionError for an
access denied, gcsfs a bare OSError("Forbidden: <path>\n<GCS's message>") for a 403 and its own
HttpError for a 401 (no credentials, or a token or key that GCS does not accept), and adlfs lets the
Azure SDK's HttpResponseError through (Azurite, with a wrong account key: `AuthorizationFailure`).
The pipeline catches OSError where it reaches a store and explains it
(`pipeline.storage.explain_store_error`); an error outside that family would reach the user as a
traceback, and an access denied that is not a PermissionError as a vague "refused the request".
`StoreFS` wraps a store's filesystem so that every call raises only OSError for what the store
answered: PermissionError for 401 and 403, FileNotFoundError for 404, OSError otherwise.

Usage::

    fs = StoreFS(fsspec.core.url_to_fs(url)[0])   # then use it as the filesystem itself
"""

from __future__ import annotations

import functools

# The packages whose exceptions are a store's answer (or its transport's), not a bug of ours.
_BACKEND_MODULES = ("azure.", "adlfs", "gcsfs", "google.", "botocore", "aiobotocore", "s3fs", "aiohttp")


# How gcsfs words GCS's 403 (gcsfs.retry.validate_response): a bare OSError, no errno.
_GCSFS_FORBIDDEN = "Forbidden: "


def as_os_error(e: BaseException) -> OSError | None:
    """The OSError a backend's exception means, or None when it is not a store's answer or already
    the OSError that says what it is."""
    if type(e) is OSError and e.errno is None and str(e).startswith(_GCSFS_FORBIDDEN):
        return PermissionError(13, str(e).splitlines()[0])
    if isinstance(e, OSError):
        return None
    if not type(e).__module__.startswith(_BACKEND_MODULES):
        return None
    status = getattr(e, "status_code", None) or getattr(e, "status", None) or getattr(e, "code", None)
    text = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    if type(e).__name__ == "ClientAuthenticationError" or status in (401, 403):
        return PermissionError(13, text)
    if type(e).__name__ == "ResourceNotFoundError" or status == 404:
        return FileNotFoundError(2, text)
    return OSError(text)


class StoreFS:
    """A store's fsspec filesystem whose calls raise OSError (see the module's text) for what the
    store answered; attributes and everything else are the filesystem's own."""

    def __init__(self, fs) -> None:
        self._fs = fs

    @property
    def wrapped(self):
        """The filesystem itself."""
        return self._fs

    def __getattr__(self, name: str):
        attr = getattr(self._fs, name)
        if not callable(attr) or name.startswith("__"):
            return attr

        @functools.wraps(attr)
        def call(*args, **kwargs):
            try:
                return attr(*args, **kwargs)
            except Exception as e:
                translated = as_os_error(e)
                if translated is None:
                    raise
                raise translated from e

        return call
