"""A store's own exceptions become the OSError the pipeline explains; a bug stays a bug."""

from __future__ import annotations

import pytest

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


def test_an_os_error_or_an_error_of_ours_is_left_as_it_is():
    assert as_os_error(PermissionError("denied")) is None
    assert as_os_error(ValueError("a bug")) is None


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
