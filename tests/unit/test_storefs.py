"""A store's own exceptions become the OSError the pipeline explains; a bug stays a bug."""

from __future__ import annotations

import json

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from pipeline.errors import SourceError
from pipeline.storage import explain_store_error, list_objects
from pipeline.storefs import StoreFS, as_os_error


def test_the_azure_sdk_s_answers_become_os_errors():
    exc = pytest.importorskip("azure.core.exceptions")
    assert isinstance(as_os_error(exc.ClientAuthenticationError("bad signature")), PermissionError)
    assert isinstance(as_os_error(exc.ResourceNotFoundError("no blob")), FileNotFoundError)
    refused = exc.HttpResponseError("AuthorizationFailure")
    refused.status_code = 403
    assert isinstance(as_os_error(refused), PermissionError)
    other = exc.HttpResponseError("ServerBusy")
    other.status_code = 503
    translated = as_os_error(other)
    assert type(translated) is OSError and "ServerBusy" in str(translated)


def _gcsfs_answer(status: int, message: str) -> Exception:
    """What gcsfs raises for GCS's answer `status` with GCS's JSON error body."""
    retry = pytest.importorskip("gcsfs.retry")
    body = json.dumps({"error": {"code": status, "message": message, "errors": [{"message": message}]}})
    with pytest.raises(Exception) as caught:
        retry.validate_response(status, body.encode(), "b/{}/o", ("in-bucket",))
    return caught.value


def test_gcs_s_refusals_become_permission_errors():
    """gcsfs words a 403 as a bare OSError("Forbidden: ...") and a 401 as its HttpError: both are an
    access denied (a 404 is already FileNotFoundError, left as it is)."""
    forbidden = _gcsfs_answer(403, "reader@p.iam.gserviceaccount.com does not have storage.objects.list access")
    assert type(forbidden) is OSError
    translated = as_os_error(forbidden)
    assert isinstance(translated, PermissionError) and str(translated).endswith("Forbidden: b/in-bucket/o")
    for message in ("Anonymous caller does not have storage.objects.list access", "Invalid Credentials"):
        assert isinstance(as_os_error(_gcsfs_answer(401, message)), PermissionError)
    assert as_os_error(_gcsfs_answer(404, "Not Found")) is None


def test_an_anonymous_gcs_request_is_named_as_carrying_no_credentials():
    """gcsfs goes anonymous, silently, when it finds no credentials: the message says so, so the user
    looks at the credentials rather than at the bucket's policy."""
    anonymous = as_os_error(_gcsfs_answer(401, "Anonymous caller does not have storage.objects.get access to the "
                                               "Google Cloud Storage object."))
    assert explain_store_error(anonymous, "gs://b/x").endswith("; the request carried none (gcsfs found none and "
                                                               "went anonymous)")
    invalid = explain_store_error(as_os_error(_gcsfs_answer(401, "Invalid Credentials")), "gs://b/x")
    assert invalid.startswith("access denied: check the credentials (GOOGLE_APPLICATION_CREDENTIALS")
    assert "carried none" not in invalid


def test_an_os_error_or_an_error_of_ours_is_left_as_it_is():
    assert as_os_error(PermissionError("denied")) is None
    assert as_os_error(OSError("Connection reset by peer")) is None
    assert as_os_error(ValueError("a bug")) is None


class _ForbiddingFS(MemoryFileSystem):
    """A store that refuses every request as gcsfs words GCS's 403."""

    protocol = "forbidding"

    def info(self, path, **kwargs):
        raise OSError(f"Forbidden: {path}\nno access")


def test_a_refused_listing_is_named_as_refused_not_as_missing():
    """fsspec's isdir and isfile answer False to any error: listing must not take a refusal for absence."""
    fsspec.register_implementation("forbidding", _ForbiddingFS, clobber=True)
    with pytest.raises(SourceError, match=r"forbidding://b/in: cannot list the objects: access denied"):
        list_objects("forbidding://b/in", (".jsonl",))


def test_the_wrapper_translates_calls_and_passes_attributes_through():
    exc = pytest.importorskip("azure.core.exceptions")

    class Backend:
        protocol = ("abfs", "az")

        def ls(self, path):
            raise exc.ClientAuthenticationError("bad signature")

        def broken(self):
            raise KeyError("ours")

    fs = StoreFS(Backend())
    assert fs.protocol == ("abfs", "az")
    with pytest.raises(PermissionError) as caught:
        fs.ls("c/x")
    assert isinstance(caught.value.__cause__, exc.ClientAuthenticationError)
    with pytest.raises(KeyError):
        fs.broken()


def test_a_gcs_bucket_under_uniform_access_takes_no_object_acls():
    """The quarantine's incidents get the predefined ACL `private` only where the bucket allows
    per-object ACLs; the emulator the integration tests use cannot turn uniform access on."""
    from pipeline.storage import _uniform_access_refusal, takes_object_acls

    assert takes_object_acls({"name": "b", "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": False}}})
    assert takes_object_acls({"name": "b"})  # no IAM configuration: fine-grained, the legacy default
    assert not takes_object_acls({"iamConfiguration": {"uniformBucketLevelAccess": {"enabled": True}}})
    assert not takes_object_acls({"iamConfiguration": {"bucketPolicyOnly": {"enabled": True}}})
    # GCS's answer to an ACL update under uniform access (HTTP 400)
    assert _uniform_access_refusal(OSError("HttpError: Cannot insert legacy ACL for an object when uniform "
                                           "bucket-level access is enabled."))
    assert not _uniform_access_refusal(PermissionError(13, "Forbidden"))
