"""A credential-checking front for a GCS test server: run as its own process on 127.0.0.1.

Neither GCS server the tests use (gcp-storage-emulator, fake-gcs-server) checks credentials. This
reverse proxy does, as GCS's JSON API does, and forwards what it lets through to the server:

- no `Authorization: Bearer` header: 401 "Anonymous caller does not have ... access";
- a bearer token it does not know: 401 "Invalid Credentials" (GCS's answer to a bad or expired token);
- a token it knows, on a bucket that token was not granted: 403 "... does not have ... access";
- `POST /token`, Google's OAuth 2.0 token endpoint for service-account keys (the `token_uri` of the
  key file that GOOGLE_APPLICATION_CREDENTIALS names): a signed assertion from an account it knows
  gets an access token for that account; any other gets Google's 400 `invalid_grant` (what a
  deleted or revoked key gets). It reads the account from the assertion and does not check the
  signature: an account is known or not.

Usage::

    python tests/gcsauthproxy.py --port 8123 --upstream http://127.0.0.1:4443 \\
        --grant reader@p.iam.gserviceaccount.com=in-bucket,out-bucket --grant other@p.iam.gserviceaccount.com=

Error bodies are GCS's JSON error format ({"error": {"code", "message", "errors": [...]}}), so the
client parses them as it parses GCS's own.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import re
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# The bucket a JSON API path names: /storage/v1/b/<bucket>/..., /upload/storage/v1/b/<bucket>/...,
# /download/storage/v1/b/<bucket>/...; a bucket listing or creation (/storage/v1/b) names none.
_BUCKET = re.compile(r"^/(?:upload/|download/)?storage/v1/b/([^/?]+)")
# The grant type of a service-account key's signed assertion (RFC 7523).
_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
# Headers that describe one hop, not the message (RFC 9110, 7.6.1): never forwarded. Host is: the
# server then builds the URLs it answers with (a resumable upload's session) on this front's address.
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te", "trailer"}


def gcs_error(code: int, message: str, reason: str) -> bytes:
    """GCS's JSON error body."""
    entry = {"message": message, "domain": "global", "reason": reason}
    if code == 401:
        entry.update({"locationType": "header", "location": "Authorization"})
    return json.dumps({"error": {"code": code, "message": message, "errors": [entry]}}).encode()


def access_token(account: str) -> str:
    """The access token this front issues to an account (Google's start with `ya29.`)."""
    return f"ya29.test.{account}"


def refusal(authorization: str | None, path: str, grants: dict[str, set[str]]) -> tuple[int, bytes] | None:
    """(status, body) of GCS's refusal of a request with this Authorization header on this path, or
    None when the request may pass. `grants`: account -> the buckets it may reach ("*": all)."""
    match = _BUCKET.match(urllib.parse.urlsplit(path).path)
    bucket = urllib.parse.unquote(match.group(1)) if match else None
    what = f"the Google Cloud Storage bucket{'' if bucket is None else ' ' + bucket}"
    if not authorization or not authorization.startswith("Bearer "):
        return 401, gcs_error(401, f"Anonymous caller does not have storage access to {what}.", "required")
    accounts = {access_token(a): a for a in grants}
    account = accounts.get(authorization[len("Bearer "):])
    if account is None:
        return 401, gcs_error(401, "Invalid Credentials", "authError")
    if bucket is not None and not grants[account] & {bucket, "*"}:
        return 403, gcs_error(403, f"{account} does not have storage access to {what}. Permission denied on "
                                   "resource (or it may not exist).", "forbidden")
    return None


def asserted_account(assertion: str) -> str | None:
    """The account (`iss`) a JWT assertion claims to be, unverified; None when it is not a JWT."""
    try:
        payload = assertion.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["iss"]
    except (IndexError, ValueError, KeyError, TypeError):
        return None


class AuthProxyHandler(BaseHTTPRequestHandler):
    """Checks each request's credentials, then answers it or forwards it to the upstream server."""

    protocol_version = "HTTP/1.1"
    upstream: urllib.parse.SplitResult
    grants: dict[str, set[str]]  # account -> buckets

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        """Quiet: the tests read answers, not a log."""

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _answer(self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(status)
        for key, value in headers or [("Content-Type", "application/json; charset=UTF-8")]:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _token(self, body: bytes) -> None:
        """The JWT-bearer grant of a service-account key, as Google's token endpoint answers it."""
        form = urllib.parse.parse_qs(body.decode())
        account = asserted_account((form.get("assertion") or [""])[0])
        if form.get("grant_type") != [_JWT_BEARER] or account not in self.grants:
            refused = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            self._answer(400, json.dumps(refused).encode())
        else:
            self._answer(200, json.dumps({"access_token": access_token(account), "token_type": "Bearer",
                                          "expires_in": 3600}).encode())

    def _forward(self, body: bytes) -> None:
        conn = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            headers["Content-Length"] = str(len(body))
            conn.request(self.command, self.path, body=body, headers=headers)
            response = conn.getresponse()
            data = response.read()
            kept = [(k, v) for k, v in response.getheaders() if k.lower() not in _HOP | {"content-length"}]
            self._answer(response.status, data, kept)
        finally:
            conn.close()

    def _handle(self) -> None:
        body = self._body()  # read even when refused: the connection is kept alive
        if self.command == "POST" and self.path.split("?", 1)[0] == "/token":
            self._token(body)
            return
        refused = refusal(self.headers.get("Authorization"), self.path, self.grants)
        if refused is not None:
            self._answer(*refused)
        else:
            self._forward(body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle


def parse_grant(text: str) -> tuple[str, set[str]]:
    """`ACCOUNT=BUCKET[,BUCKET...]` -> (account, buckets); no bucket: the account reaches none."""
    account, buckets = text.split("=", 1)
    return account, set(filter(None, buckets.split(",")))


def main(argv: list[str] | None = None) -> None:
    """Serve until terminated."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="the GCS server's URL, e.g. http://127.0.0.1:4443")
    parser.add_argument("--grant", action="append", default=[], help="ACCOUNT=BUCKET[,BUCKET] ('*': every bucket)")
    args = parser.parse_args(argv)

    class Handler(AuthProxyHandler):
        upstream = urllib.parse.urlsplit(args.upstream)
        grants = dict(parse_grant(g) for g in args.grant)

    ThreadingHTTPServer(("127.0.0.1", args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
