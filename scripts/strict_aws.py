#!/usr/bin/env python3
"""A strict AWS counterpart for the tests (issue 35): moto's server, in-process, with
every request's SigV4 signature checked and the caller's identity policies evaluated,
plus a strict front for LocalStack's Step Functions.

LocalStack checks no signature and evaluates no policy; this server does both, so that
a test run with an IAM user whose policy is exactly the README's least-privilege policy
fails when the host needs a permission the README does not give.

  python3 scripts/strict_aws.py STATE_FILE

binds a free port on 127.0.0.1 and, once serving, writes STATE_FILE (JSON: endpoint,
admin access key id and secret). Environment: LOCALSTACK_ENDPOINT (where Step Functions
requests go once allowed; without it they are refused).

What it enforces, beyond moto:
- every request is signed (no anonymous access; unknown key: InvalidClientTokenId /
  InvalidAccessKeyId / UnrecognizedClientException; wrong secret: SignatureDoesNotMatch /
  InvalidSignatureException), admin bootstrapped in-process before the first request;
- identity policies (inline and attached, of users, groups and assumed roles) evaluated
  per AWS's rules: an explicit Deny wins, else an Allow whose Action/NotAction,
  Resource/NotResource and Condition (String*, Arn*, Bool, Null, ...IfExists) all match;
  resources are the real ARNs (S3 bucket and object, Secrets Manager secret, SSM
  parameter, KMS key, IAM and STS as moto gives them, Step Functions activity);
- AssumeRole also needs the role's trust policy to name the caller (or its account);
- S3: HeadBucket is s3:ListBucket; GetObject/HeadObject of a missing key by a caller
  without s3:ListBucket on the bucket answers 403 AccessDenied, not 404 NoSuchKey;
  conditional writes (If-None-Match: *, If-Match) are atomic;
- Step Functions (credential scope `states`): signature and policy checked here
  (`states:<operation>`, on the activity/state machine/execution ARN the request names,
  `*` for SendTask*), then forwarded unchanged to LocalStack and its answer streamed back.
Errors are AWS-shaped (XML for S3/STS/IAM, JSON `__type` for JSON-protocol services) and
name the action and resource denied.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import re
import sys
import threading
import urllib.parse
from typing import Any

# moto reads these at import.
os.environ.setdefault("MOTO_ALLOW_NONEXISTENT_REGION", "false")
os.environ["INITIAL_NO_AUTH_ACTION_COUNT"] = "inf"  # until the admin is bootstrapped below

from moto import settings  # noqa: E402
from moto.core import DEFAULT_ACCOUNT_ID  # noqa: E402
from moto.core.exceptions import JsonRESTError, _RESTError  # noqa: E402
from moto.iam import access_control  # noqa: E402
from moto.iam.access_control import (  # noqa: E402
    CreateAccessKeyFailure,
    IAMPolicy,
    IAMRequest,
    IAMRequestBase,
    S3IAMRequest,
    create_access_key,
)
from moto.iam.models import iam_backends  # noqa: E402
from moto.moto_server.werkzeug_app import (  # noqa: E402
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from moto.s3.exceptions import S3AccessDeniedError  # noqa: E402
from werkzeug.datastructures import EnvironHeaders  # noqa: E402
from werkzeug.serving import make_server  # noqa: E402

ACCOUNT = DEFAULT_ACCOUNT_ID
PARTITION = "aws"
ADMIN_USER = "strict-aws-admin"

# ---------------------------------------------------------------------------------------
# Policy evaluation (AWS's identity-policy logic, for one principal in one account).


def _list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def _wildcard(pattern: str, value: str, ignore_case: bool = False) -> bool:
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, value, re.IGNORECASE if ignore_case else 0) is not None


def _arn_like(pattern: str, value: str) -> bool:
    # ArnLike compares the six colon-separated parts, each with wildcards.
    p, v = pattern.split(":", 5), value.split(":", 5)
    if len(p) != 6 or len(v) != 6:
        return False
    return all(_wildcard(a, b) for a, b in zip(p, v))


_OPERATORS = {
    "StringEquals": lambda want, got: want == got,
    "StringNotEquals": lambda want, got: want == got,
    "StringEqualsIgnoreCase": lambda want, got: want.lower() == got.lower(),
    "StringNotEqualsIgnoreCase": lambda want, got: want.lower() == got.lower(),
    "StringLike": lambda want, got: _wildcard(want, got),
    "StringNotLike": lambda want, got: _wildcard(want, got),
    "ArnEquals": lambda want, got: want == got,
    "ArnNotEquals": lambda want, got: want == got,
    "ArnLike": _arn_like,
    "ArnNotLike": _arn_like,
    "Bool": lambda want, got: str(want).lower() == str(got).lower(),
}


class UnsupportedPolicy(Exception):
    pass


def _condition_holds(operator: str, key: str, wanted: Any, context: dict[str, list[str]]) -> bool:
    if_exists = operator.endswith("IfExists")
    base = operator[: -len("IfExists")] if if_exists else operator
    got = context.get(key.lower())
    if base == "Null":
        return (got is None) == (str(_list(wanted)[0]).lower() == "true")
    if base not in _OPERATORS:
        raise UnsupportedPolicy(f"condition operator {operator} is not supported here")
    negated = "Not" in base
    if got is None:
        # A missing key matches nothing; negated operators and ...IfExists then hold.
        return if_exists or negated
    compare = _OPERATORS[base]
    matched = any(compare(str(w), g) for w in _list(wanted) for g in got)
    return not matched if negated else matched


def _statement_matches(
    statement: dict, action: str, resource: str, context: dict[str, list[str]]
) -> bool:
    if "Action" in statement:
        if not any(_wildcard(p, action, ignore_case=True) for p in _list(statement["Action"])):
            return False
    elif "NotAction" in statement:
        if any(_wildcard(p, action, ignore_case=True) for p in _list(statement["NotAction"])):
            return False
    else:
        return False
    if "Resource" in statement:
        if not any(_wildcard(p, resource) for p in _list(statement["Resource"])):
            return False
    elif "NotResource" in statement:
        if any(_wildcard(p, resource) for p in _list(statement["NotResource"])):
            return False
    for operator, pairs in (statement.get("Condition") or {}).items():
        for key, wanted in pairs.items():
            if not _condition_holds(operator, key, wanted, context):
                return False
    return True


def evaluate(documents: list[dict], action: str, resource: str, context: dict[str, list[str]]) -> str:
    """`deny` (explicit), `allow`, or `implicit` (no statement allows)."""
    allowed = False
    for document in documents:
        for statement in _list(document.get("Statement", [])):
            if _statement_matches(statement, action, resource, context):
                if statement.get("Effect") == "Deny":
                    return "deny"
                if statement.get("Effect") == "Allow":
                    allowed = True
    return "allow" if allowed else "implicit"


def _documents(access_key: Any) -> list[dict]:
    # moto's own classes collect the policies (inline, attached, groups') and parse them.
    return [IAMPolicy(policy)._policy_json for policy in access_key.collect_policies()]


def _denial_message(principal: str, action: str, resource: str, decision: str) -> str:
    why = (
        f"with an explicit deny in an identity-based policy"
        if decision == "deny"
        else f"because no identity-based policy allows the {action} action"
    )
    return f"User: {principal} is not authorized to perform: {action} on resource: {resource} {why}"


# ---------------------------------------------------------------------------------------
# moto, made strict: its signature check stays; the authorization is replaced.

# moto names S3 requests by their API operation; IAM's actions differ for these
# (https://docs.aws.amazon.com/AmazonS3/latest/API/API_Operations.html, "Permissions").
_ACTION_FIXES = {
    "s3:HeadObject": "s3:GetObject",
    "s3:HeadBucket": "s3:ListBucket",
    "s3:ListObjects": "s3:ListBucket",
    "s3:ListObjectsV2": "s3:ListBucket",
    "s3:ListObjectVersions": "s3:ListBucketVersions",
    "s3:ListBuckets": "s3:ListAllMyBuckets",
    "s3:ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "s3:ListParts": "s3:ListMultipartUploadParts",
    "s3:DeleteObjects": "s3:DeleteObject",
    # SQS's batch actions take the single action's permission (there is no
    # sqs:DeleteMessageBatch in IAM).
    "sqs:DeleteMessageBatch": "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibilityBatch": "sqs:ChangeMessageVisibility",
    "sqs:SendMessageBatch": "sqs:SendMessage",
    "s3:CopyObject": "s3:PutObject",
    "s3:CreateMultipartUpload": "s3:PutObject",
    "s3:UploadPart": "s3:PutObject",
    "s3:UploadPartCopy": "s3:PutObject",
    "s3:CompleteMultipartUpload": "s3:PutObject",
    "s3:GetObjectAttributes": "s3:GetObjectAttributes",
    "s3:GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "s3:PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "s3:DeleteBucketLifecycle": "s3:PutLifecycleConfiguration",
    "s3:GetBucketCors": "s3:GetBucketCORS",
    "s3:PutBucketCors": "s3:PutBucketCORS",
    "s3:DeleteBucketCors": "s3:PutBucketCORS",
    "s3:DeleteBucketTagging": "s3:PutBucketTagging",
    "s3:GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "s3:PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "s3:DeleteBucketEncryption": "s3:PutEncryptionConfiguration",
    "s3:GetBucketNotificationConfiguration": "s3:GetBucketNotification",
    "s3:PutBucketNotificationConfiguration": "s3:PutBucketNotification",
    "s3:GetObjectLockConfiguration": "s3:GetBucketObjectLockConfiguration",
    "s3:PutObjectLockConfiguration": "s3:PutBucketObjectLockConfiguration",
    "s3:GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "s3:PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "s3:DeletePublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "s3:GetBucketAccelerateConfiguration": "s3:GetAccelerateConfiguration",
    "s3:PutBucketAccelerateConfiguration": "s3:PutAccelerateConfiguration",
}


def _is_json_protocol(headers: Any) -> bool:
    return "application/x-amz-json" in (headers.get("Content-Type") or "")


def _request_context(request: IAMRequestBase) -> dict[str, list[str]]:
    context: dict[str, list[str]] = {"aws:principalarn": [request._access_key.arn]}
    query = urllib.parse.urlsplit(request._path).query
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    if request._service == "s3":
        for name in ("prefix", "delimiter", "max-keys"):
            if name in params:
                context[f"s3:{name}"] = params[name]
    if request._service == "sts":
        external_id = request._data.get("ExternalId") if isinstance(request._data, dict) else None
        if external_id:
            context["sts:externalid"] = [external_id]
    return context


def _trust_allows(request: IAMRequestBase, role_arn: str) -> tuple[bool, bool]:
    """(the trust policy allows, it names the caller itself) for AssumeRole of `role_arn`."""
    try:
        role = request.backend.get_role_by_arn(role_arn)
    except Exception:
        return False, False
    trust = json.loads(role.assume_role_policy_document)
    caller = request._access_key.arn
    account_principals = {f"arn:{PARTITION}:iam::{request.account_id}:root", request.account_id}
    context = _request_context(request)
    allowed = named = False
    for statement in _list(trust.get("Statement", [])):
        if not any(_wildcard(p, "sts:AssumeRole", True) for p in _list(statement.get("Action", []))):
            continue
        principal = statement.get("Principal")
        names = _list(principal.get("AWS", [])) if isinstance(principal, dict) else _list(principal)
        if not ("*" in names or caller in names or account_principals & set(names)):
            continue
        if not all(
            _condition_holds(op, key, wanted, context)
            for op, pairs in (statement.get("Condition") or {}).items()
            for key, wanted in pairs.items()
        ):
            continue
        if statement.get("Effect") == "Deny":
            return False, False
        allowed = True
        named = named or caller in names
    return allowed, named


def _strict_check_action_permitted(self: IAMRequestBase, resource: str) -> None:
    action = _ACTION_FIXES.get(self._action, self._action)
    if os.environ.get("STRICT_AWS_VERBOSE"):
        print(f"authorize {self._access_key.arn} {action} {resource}", file=sys.stderr, flush=True)
    if action == "sts:GetCallerIdentity":  # AWS: always allowed
        return
    try:
        decision = evaluate(_documents(self._access_key), action, resource, _request_context(self))
    except UnsupportedPolicy as error:
        raise _denied(self, action, resource, "implicit", note=str(error))
    if action == "sts:AssumeRole":
        trusted, named = _trust_allows(self, resource)
        if decision != "deny" and trusted and (named or decision == "allow"):
            return
        raise _denied(self, action, resource, decision)
    if decision != "allow":
        raise _denied(self, action, resource, decision)


def _denied(request: IAMRequestBase, action: str, resource: str, decision: str, note: str = "") -> Exception:
    message = _denial_message(request._access_key.arn, action, resource, decision)
    if note:
        message += f" ({note})"
    if isinstance(request, S3IAMRequest):
        error = S3AccessDeniedError()
        error.message = message
        error.args = (message,)
        return error
    if _is_json_protocol(request._headers):
        return JsonRESTError("AccessDeniedException", message)
    error = _RESTError("AccessDenied", message)
    error.code = 403
    return error


def _json_raise_signature(self: IAMRequest) -> None:
    if _is_json_protocol(self._headers):
        error = JsonRESTError(
            "InvalidSignatureException",
            "The request signature we calculated does not match the signature you provided. "
            "Check your AWS Secret Access Key and signing method. Consult the service documentation for details.",
        )
        error.code = 403
        raise error
    _original_raise_signature(self)


def _json_raise_invalid_key(self: IAMRequest, reason: str) -> None:
    if _is_json_protocol(self._headers):
        error = JsonRESTError(
            "UnrecognizedClientException", "The security token included in the request is invalid."
        )
        error.code = 403
        raise error
    _original_raise_invalid_key(self, reason)


_original_raise_signature = IAMRequest._raise_signature_does_not_match
_original_raise_invalid_key = IAMRequest._raise_invalid_access_key


def _patch_moto() -> None:
    IAMRequestBase.check_action_permitted = _strict_check_action_permitted
    IAMRequest._raise_signature_does_not_match = _json_raise_signature
    IAMRequest._raise_invalid_access_key = _json_raise_invalid_key

    # Resource-level permissions where moto evaluates `*`.
    from moto.kms.responses import KmsResponse
    from moto.secretsmanager.responses import SecretsManagerResponse
    from moto.ssm.responses import SimpleSystemManagerResponse

    def _body(response: Any) -> dict:
        try:
            return json.loads(response.body or "{}")
        except ValueError:
            return {}

    def secret_resource(self: Any) -> str:
        secret_id = _body(self).get("SecretId")
        if not secret_id:
            return "*"
        try:
            return self.backend.describe_secret(secret_id).arn
        except Exception:
            if secret_id.startswith("arn:"):
                return secret_id
            return f"arn:{PARTITION}:secretsmanager:{self.region}:{self.current_account}:secret:{secret_id}"

    def parameter_resource(self: Any) -> str:
        name = _body(self).get("Name")
        if not name:
            return "*"
        if name.startswith("arn:"):
            return name
        return f"arn:{PARTITION}:ssm:{self.region}:{self.current_account}:parameter/{name.lstrip('/')}"

    def key_resource(self: Any) -> str:
        key_id = _body(self).get("KeyId")
        if not key_id:
            return "*"
        try:
            backend = self.kms_backend
            return backend.describe_key(backend.get_key_id(key_id)).arn
        except Exception:
            return "*"

    SecretsManagerResponse._determine_resource = secret_resource
    SimpleSystemManagerResponse._determine_resource = parameter_resource
    KmsResponse._determine_resource = key_resource


def _bootstrap_admin() -> tuple[str, str]:
    backend = iam_backends[ACCOUNT][PARTITION]
    backend.create_user(region_name="us-east-1", user_name=ADMIN_USER)
    backend.put_user_policy(
        ADMIN_USER,
        "admin",
        json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}),
    )
    key = backend.create_access_key(ADMIN_USER)
    # From here on every request is authenticated and authorized.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0
    return key.access_key_id, key.secret_access_key


# ---------------------------------------------------------------------------------------
# The WSGI layer in front of moto.


def _credential_scope(environ: dict) -> tuple[str, str, str] | None:
    """(access key id, region, service) of a header-signed request."""
    auth = environ.get("HTTP_AUTHORIZATION", "")
    match = re.search(r"Credential=([^/]+)/\d{8}/([^/]+)/([^/]+)/aws4_request", auth)
    return (match.group(1), match.group(2), match.group(3)) if match else None


def _read_body(environ: dict) -> bytes:
    stream = environ["wsgi.input"]
    if environ.get("wsgi.input_terminated"):
        body = stream.read()
    else:
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = stream.read(length) if length else b""
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    return body


def _respond(start_response: Any, status: int, body: bytes, content_type: str, extra=()) -> list[bytes]:
    reason = http.client.responses.get(status, "Error")
    start_response(
        f"{status} {reason}",
        [("Content-Type", content_type), ("Content-Length", str(len(body))), *extra],
    )
    return [body]


def _xml_error(code: str, message: str) -> bytes:
    from xml.sax.saxutils import escape

    return (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{escape(code)}</Code>'
        f"<Message>{escape(message)}</Message><RequestId>strict-aws</RequestId></Error>"
    ).encode()


class StrictApp:
    def __init__(self, localstack: str | None) -> None:
        self.moto = DomainDispatcherApplication(create_backend_app)
        self.localstack = urllib.parse.urlsplit(localstack) if localstack else None
        # Conditional writes: the check and the write happen under one lock.
        self.s3_writes = threading.Lock()

    def __call__(self, environ: dict, start_response: Any) -> Any:
        scope = _credential_scope(environ)
        if scope is None:
            if "X-Amz-Credential=" in environ.get("QUERY_STRING", ""):
                return self.moto(environ, start_response)  # presigned: moto checks it
            return _respond(
                start_response,
                403,
                _xml_error("AccessDenied", "Unsigned requests are refused (strict AWS emulator)."),
                "application/xml",
            )
        body = _read_body(environ)
        service = scope[2]
        if service == "states":
            return self.states(environ, start_response, body)
        if service == "s3":
            return self.s3(environ, start_response, scope)
        status, headers, answer = self._call_moto(environ)
        if status[:1] in "45" and b"<Errors><Error>" in answer:
            # AWS's query protocol (STS, IAM) has one <Error> under <ErrorResponse>, and a
            # <RequestId>; moto writes EC2's <Errors><Error>, which the AWS SDK for Rust
            # cannot read (no code).
            answer = answer.replace(b"<Errors><Error>", b"<Error>").replace(
                b"</Error></Errors>", b"</Error><RequestId>strict-aws</RequestId>"
            )
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(answer))))
        start_response(status, headers)
        return [answer]

    # --- S3 -----------------------------------------------------------------------------

    def _call_moto(self, environ: dict) -> tuple[str, list, bytes]:
        captured: dict[str, Any] = {}

        def start(status: str, headers: list, exc_info: Any = None) -> None:
            captured["status"], captured["headers"] = status, headers

        chunks = self.moto(environ, start)
        try:
            body = b"".join(chunks)
        finally:
            if hasattr(chunks, "close"):
                chunks.close()
        return captured["status"], captured["headers"], body

    def s3(self, environ: dict, start_response: Any, scope: tuple[str, str, str]) -> Any:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/")
        bucket, _, key = path.lstrip("/").partition("/")
        is_object = bool(bucket and key)
        if is_object and method in ("PUT", "POST", "DELETE"):
            with self.s3_writes:
                status, headers, body = self._call_moto(environ)
        else:
            status, headers, body = self._call_moto(environ)
        if is_object and method in ("GET", "HEAD") and status.startswith("404"):
            if method == "HEAD" or b"<Code>NoSuchKey</Code>" in body:
                denial = self._list_bucket_denial(environ, scope, bucket, key)
                if denial:
                    if method == "HEAD":
                        return _respond(start_response, 403, b"", "application/xml")
                    return _respond(start_response, 403, _xml_error("AccessDenied", denial), "application/xml")
        start_response(status, headers)
        return [body]

    def _list_bucket_denial(
        self, environ: dict, scope: tuple[str, str, str], bucket: str, key: str
    ) -> str | None:
        """AWS: a missing key reads as 404 only to a caller allowed s3:ListBucket on the
        bucket; to others as 403. The denial message, or None when allowed. The request
        is an object's, which carries no `s3:prefix`: a `s3:ListBucket` conditioned on a
        prefix is not counted (the strict reading; AWS documents no exception)."""
        headers = EnvironHeaders(environ)
        try:
            access_key = create_access_key(ACCOUNT, PARTITION, scope[0], headers)
        except CreateAccessKeyFailure:
            return "Access Denied"
        resource = f"arn:{PARTITION}:s3:::{bucket}"
        decision = evaluate(_documents(access_key), "s3:ListBucket", resource, {})
        if decision == "allow":
            return None
        return _denial_message(access_key.arn, "s3:ListBucket", resource, decision)

    # --- Step Functions, in front of LocalStack ------------------------------------------

    def states(self, environ: dict, start_response: Any, body: bytes) -> Any:
        def json_error(status: int, kind: str, message: str) -> list[bytes]:
            payload = json.dumps({"__type": kind, "message": message}).encode()
            return _respond(
                start_response, status, payload, "application/x-amz-json-1.0", [("x-amzn-ErrorType", kind)]
            )

        if self.localstack is None:
            return json_error(500, "InternalFailure", "LOCALSTACK_ENDPOINT is not set for the strict front")
        headers = EnvironHeaders(environ)
        target = headers.get("X-Amz-Target", "")
        operation = target.rpartition(".")[2]
        path = environ.get("RAW_URI") or environ.get("PATH_INFO") or "/"
        try:
            request = IAMRequest(
                account_id=ACCOUNT,
                method=environ["REQUEST_METHOD"],
                path=path,
                data={},
                body=body,
                headers=headers,
                action=operation,
            )
            request.check_signature()
        except _RESTError as error:
            return json_error(error.code, error.error_type, error.message)
        try:
            payload = json.loads(body or b"{}")
        except ValueError:
            payload = {}
        resource = "*"
        if operation not in ("SendTaskSuccess", "SendTaskFailure", "SendTaskHeartbeat"):
            for field in ("activityArn", "stateMachineArn", "executionArn"):
                if isinstance(payload.get(field), str):
                    resource = payload[field]
                    break
        action = f"states:{operation}"
        if os.environ.get("STRICT_AWS_VERBOSE"):
            print(f"authorize {request._access_key.arn} {action} {resource}", file=sys.stderr, flush=True)
        try:
            decision = evaluate(_documents(request._access_key), action, resource, _request_context(request))
        except UnsupportedPolicy as error:
            return json_error(400, "AccessDeniedException", str(error))
        if decision != "allow":
            message = _denial_message(request._access_key.arn, action, resource, decision)
            return json_error(400, "AccessDeniedException", message)
        return self._forward(environ, start_response, body)

    def _forward(self, environ: dict, start_response: Any, body: bytes) -> Any:
        assert self.localstack is not None
        connection = http.client.HTTPConnection(self.localstack.hostname, self.localstack.port, timeout=90)
        path = environ.get("PATH_INFO", "/") or "/"
        if environ.get("QUERY_STRING"):
            path += "?" + environ["QUERY_STRING"]
        hop = {"connection", "keep-alive", "transfer-encoding", "content-length", "te", "upgrade"}
        headers = {
            name: value for name, value in EnvironHeaders(environ).items() if name.lower() not in hop
        }
        headers["Content-Length"] = str(len(body))
        try:
            connection.request(environ["REQUEST_METHOD"], path, body=body, headers=headers)
            response = connection.getresponse()
        except OSError as error:
            connection.close()
            payload = json.dumps({"__type": "ServiceUnavailable", "message": f"LocalStack: {error}"}).encode()
            return _respond(start_response, 503, payload, "application/x-amz-json-1.0")
        passed = [(k, v) for k, v in response.getheaders() if k.lower() not in hop]
        length = response.getheader("Content-Length")
        if length is not None:
            passed.append(("Content-Length", length))
        start_response(f"{response.status} {response.reason}", passed)

        def stream():
            try:
                while True:
                    chunk = response.read(65536)
                    if not chunk:
                        break
                    yield chunk
            finally:
                connection.close()

        return stream()


class Handler(MotoRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as AWS

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        if os.environ.get("STRICT_AWS_VERBOSE"):
            super().log_request(*args, **kwargs)


def main() -> None:
    state_file = sys.argv[1]
    _patch_moto()
    key_id, secret = _bootstrap_admin()
    app = StrictApp(os.environ.get("LOCALSTACK_ENDPOINT"))
    server = make_server("127.0.0.1", int(os.environ.get("STRICT_AWS_PORT", "0")), app, threaded=True, request_handler=Handler)
    port = server.server_port
    state = {
        "endpoint": f"http://127.0.0.1:{port}",
        "admin_key_id": key_id,
        "admin_secret": secret,
        "account": ACCOUNT,
        "pid": os.getpid(),
    }
    temporary = state_file + ".tmp"
    with open(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
        json.dump(state, out)
    os.rename(temporary, state_file)
    print(f"strict AWS at http://127.0.0.1:{port}", file=sys.stderr, flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
