"""AWS from a Python handler, with botocore's names, signed by the host.

botocore and boto3 do not run in componentize-py (no zlib, no sockets). This client
keeps their operation and parameter names, so that handler code reads as boto3 code::

    from sfn_wasm_guest import aws

    s3 = aws.client("s3", region_name="us-east-1")
    body = s3.get_object(Bucket="b", Key="k")["Body"].read()
    aws.client("sqs", region_name="us-east-1").send_message(QueueUrl=url, MessageBody="hi")

The handler holds no credential: requests go unsigned to
``https://SERVICE.REGION.amazonaws.com`` and the host signs them with its own
credentials (or the activity's role) for what ``[activity.aws]`` grants, sending them to
``[aws] endpoint_url`` when set; any other request raises
:class:`sfn_wasm_guest.http.HttpError` (``HTTP-request-denied``).

What it supports, and how it answers (there are no service models here, so answers are
what the service sent, not botocore's typed shapes):

- **JSON-protocol services** (:data:`JSON_SERVICES`: ``sqs``, ``dynamodb``,
  ``stepfunctions``, ``secretsmanager``, ``ssm``, ``kinesis``, ``events``, ``logs``,
  ``kms``): every operation, ``snake_case`` as botocore names it (``send_message`` ->
  ``SendMessage``; the API's own name, ``SendMessage``, works too); keyword arguments are
  the request's JSON, the answer is the parsed JSON. Blobs (DynamoDB ``B``, Kinesis
  ``Data``) are base64 strings, as on the wire.
- **Query-protocol services** (:data:`QUERY_SERVICES`: ``sns``, ``sts``): every
  operation; scalar keyword arguments (``None`` left out, bytes base64), lists
  (``Name.member.N``), structures as dicts (``Name.Field``), and SNS's maps
  (``Attributes``: ``Name.entry.N.key``/``value``; ``MessageAttributes``:
  ``Name.entry.N.Name``/``Value``); the answer is the ``…Result`` element as a dict of
  its children's text (repeated ``member`` elements as lists).
- **S3**, the REST calls handlers make: ``get_object`` (``Body`` with ``read(n)``,
  ``iter_chunks()``, ``iter_lines()`` and ``close()``, held whole), ``put_object``,
  ``head_object``, ``delete_object``, ``list_objects_v2``; path-style addressing.

AWS's errors raise :class:`ClientError` as botocore does: ``err.response["Error"]["Code"]``
is AWS's code as botocore reports it (``NoSuchKey``; ``"404"`` for a ``head_object``
that finds nothing, whose answer has no body; for SQS the query-compatible code,
``AWS.SimpleQueueService.NonExistentQueue`` for a queue that does not exist) and
``["Message"]`` its message; :func:`failure` turns either error into the
:class:`~sfn_wasm_guest.TaskFailure` to fail the task with. A success whose body is not
what the protocol sends raises :class:`ResponseParserError`, as botocore does.
"""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ElementTree
from http import HTTPStatus
from typing import Any, Iterator, Optional
from urllib.parse import quote, urlencode

from . import TaskFailure
from . import http

__all__ = [
    "ClientError",
    "JSON_SERVICES",
    "QUERY_SERVICES",
    "ResponseParserError",
    "StreamingBody",
    "client",
    "failure",
]

#: botocore's service name -> (SigV4 signing name / endpoint prefix, X-Amz-Target prefix,
#: JSON version).
JSON_SERVICES = {
    "sqs": ("sqs", "AmazonSQS", "1.0"),
    "dynamodb": ("dynamodb", "DynamoDB_20120810", "1.0"),
    "stepfunctions": ("states", "AWSStepFunctions", "1.0"),
    "secretsmanager": ("secretsmanager", "secretsmanager", "1.1"),
    "ssm": ("ssm", "AmazonSSM", "1.1"),
    "kinesis": ("kinesis", "Kinesis_20131202", "1.1"),
    "events": ("events", "AWSEvents", "1.1"),
    "logs": ("logs", "Logs_20140328", "1.1"),
    "kms": ("kms", "TrentService", "1.1"),
}

#: botocore's service name -> API version, for the query protocol.
QUERY_SERVICES = {
    "sns": "2010-03-31",
    "sts": "2011-06-15",
}

_S3_OPERATIONS = ("get_object", "put_object", "head_object", "delete_object", "list_objects_v2")

#: Operation names whose words are not each capitalized (botocore's method name -> the
#: API's): the acronyms of the supported services' APIs.
_OPERATION_NAMES = {
    "assume_role_with_saml": "AssumeRoleWithSAML",
    "get_sms_attributes": "GetSMSAttributes",
    "set_sms_attributes": "SetSMSAttributes",
    "get_sms_sandbox_account_status": "GetSMSSandboxAccountStatus",
    "create_sms_sandbox_phone_number": "CreateSMSSandboxPhoneNumber",
    "delete_sms_sandbox_phone_number": "DeleteSMSSandboxPhoneNumber",
    "list_sms_sandbox_phone_numbers": "ListSMSSandboxPhoneNumbers",
    "verify_sms_sandbox_phone_number": "VerifySMSSandboxPhoneNumber",
}

#: Query-protocol map parameters (no service models here to say which dicts are maps),
#: by service and parameter name: the names of an entry's key and value.
_QUERY_MAPS = {
    "sns": {
        "Attributes": ("key", "value"),
        "attributes": ("key", "value"),
        "MessageAttributes": ("Name", "Value"),
    },
}


class ClientError(Exception):
    """AWS answered with an error, as botocore's ``ClientError``: ``response`` holds
    ``{"Error": {"Code", "Message"}, "ResponseMetadata": {"HTTPStatusCode"}}``."""

    def __init__(self, response: dict, operation_name: str) -> None:
        error = response.get("Error", {})
        super().__init__(
            f"An error occurred ({error.get('Code', 'Unknown')}) when calling the "
            f"{operation_name} operation: {error.get('Message', '')}"
        )
        self.response = response
        self.operation_name = operation_name


class ResponseParserError(Exception):
    """A success whose body is not what the protocol sends (not JSON, not XML), as
    botocore's ``ResponseParserError``."""


class StreamingBody:
    """An S3 object's body with botocore's ``read(amt)``, ``iter_chunks()``,
    ``iter_lines()`` and ``close()`` (and ``with``). It is held whole: the SDK's HTTP
    client reads a response to its end (the object counts against the task's
    ``max_response_bytes``)."""

    def __init__(self, response: http.Response) -> None:
        self._data = response.body
        self._at = 0

    def __enter__(self) -> "StreamingBody":
        return self

    def __exit__(self, *_exc: Any) -> None:
        self.close()

    def __iter__(self) -> Iterator[bytes]:
        return self.iter_chunks(1024)

    def close(self) -> None:
        """Lets the body go; later reads return ``b""``."""
        self._data = b""
        self._at = 0

    def read(self, amt: Optional[int] = None) -> bytes:
        """The next ``amt`` bytes (all that is left without ``amt``); ``b""`` at the end."""
        end = len(self._data) if amt is None else min(len(self._data), self._at + amt)
        chunk = self._data[self._at:end]
        self._at = end
        return chunk

    def iter_chunks(self, chunk_size: int = 65536) -> Iterator[bytes]:
        """The body in chunks of at most ``chunk_size`` bytes."""
        while True:
            chunk = self.read(chunk_size)
            if not chunk:
                return
            yield chunk

    def iter_lines(self, chunk_size: int = 1024, keepends: bool = False) -> Iterator[bytes]:
        """The rest of the body line by line (``keepends`` keeps the line endings)."""
        rest = self.read()
        yield from rest.splitlines(keepends)


def failure(err: Exception) -> TaskFailure:
    """The TaskFailure to fail the task with: AWS's code and message for a
    :class:`ClientError`, the wasi:http code for an :class:`~sfn_wasm_guest.http.HttpError`
    (``HTTP-request-denied``)."""
    if isinstance(err, TaskFailure):
        return err
    if isinstance(err, ClientError):
        error = err.response.get("Error", {})
        return TaskFailure(error.get("Code", "Unknown"), error.get("Message", ""))
    if isinstance(err, http.HttpError):
        return TaskFailure(err.name, err.detail)
    return TaskFailure(type(err).__name__, str(err))


def client(service_name: str, region_name: str = "us-east-1") -> "_Client":
    """A client for ``service_name`` (botocore's name) in ``region_name``. Raises
    ``ValueError`` for a service this client does not support (the message lists them)."""
    if service_name == "s3":
        return _S3(region_name)
    if service_name in JSON_SERVICES:
        return _JsonClient(service_name, region_name)
    if service_name in QUERY_SERVICES:
        return _QueryClient(service_name, region_name)
    supported = sorted(["s3", *JSON_SERVICES, *QUERY_SERVICES])
    raise ValueError(f"sfn_wasm_guest.aws supports {', '.join(supported)}; not {service_name!r}")


def _operation(name: str) -> str:
    """botocore's method name as the API's operation name: ``list_objects_v2`` ->
    ``ListObjectsV2``, ``assume_role_with_saml`` -> ``AssumeRoleWithSAML``; a name
    that is already the API's (``SendMessage``) as it is."""
    if name[:1].isupper():
        return name
    return _OPERATION_NAMES.get(name) or "".join(word[:1].upper() + word[1:] for word in name.split("_"))


class _Client:
    def __init__(self, service: str, signing: str, region: str) -> None:
        self.service = service
        self.region = region
        self.endpoint = f"https://{signing}.{region}.amazonaws.com"

    def _raise(self, response: http.Response, operation: str) -> None:
        code, message = _error_of(response)
        raise ClientError(
            {
                "Error": {"Code": code, "Message": message},
                "ResponseMetadata": {"HTTPStatusCode": response.status},
            },
            operation,
        )


class _JsonClient(_Client):
    def __init__(self, service: str, region: str) -> None:
        signing, self._target, version = JSON_SERVICES[service]
        super().__init__(service, signing, region)
        self._content_type = f"application/x-amz-json-{version}"

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        operation = _operation(name)

        def call(**params: Any) -> dict:
            response = http.request(
                "POST",
                self.endpoint + "/",
                {"x-amz-target": f"{self._target}.{operation}", "content-type": self._content_type},
                json.dumps(params),
            )
            if not response.ok:
                self._raise(response, operation)
            if not response.body:
                return {}
            try:
                return json.loads(response.body)
            except ValueError as err:
                raise ResponseParserError(f"{operation} answered with a body that is not JSON: {err}") from None

        call.__name__ = name
        return call


class _QueryClient(_Client):
    def __init__(self, service: str, region: str) -> None:
        super().__init__(service, service, region)
        self._version = QUERY_SERVICES[service]

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        operation = _operation(name)

        def call(**params: Any) -> dict:
            form = {"Action": operation, "Version": self._version}
            maps = _QUERY_MAPS.get(self.service, {})
            for key, value in params.items():
                _flatten(form, key, value, maps)
            response = http.request(
                "POST",
                self.endpoint + "/",
                {"content-type": "application/x-www-form-urlencoded; charset=utf-8"},
                urlencode(form),
            )
            if not response.ok:
                self._raise(response, operation)
            return _query_result(response.body, operation)

        call.__name__ = name
        return call


def _flatten(form: dict, key: str, value: Any, maps: dict) -> None:
    """Writes ``value`` at ``key`` as the query protocol does: lists as
    ``key.member.N``, the maps of ``maps`` (by parameter name) as ``key.entry.N.KEY`` and
    ``key.entry.N.VALUE``, other dicts as structures (``key.Field``)."""
    if value is None:
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value, 1):
            _flatten(form, f"{key}.member.{index}", item, maps)
    elif isinstance(value, dict):
        entry = maps.get(key.rsplit(".", 1)[-1])
        for index, (name, item) in enumerate(value.items(), 1):
            if entry:
                form[f"{key}.entry.{index}.{entry[0]}"] = str(name)
                _flatten(form, f"{key}.entry.{index}.{entry[1]}", item, maps)
            else:
                _flatten(form, f"{key}.{name}", item, maps)
    elif isinstance(value, bool):
        form[key] = "true" if value else "false"
    elif isinstance(value, (bytes, bytearray)):
        form[key] = base64.b64encode(value).decode("ascii")
    else:
        form[key] = str(value)


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _element(node: ElementTree.Element) -> Any:
    children = list(node)
    if not children:
        return node.text or ""
    if all(_local(child.tag) == "member" for child in children):
        return [_element(child) for child in children]
    out: dict = {}
    for child in children:
        name, value = _local(child.tag), _element(child)
        if name in out:
            out[name] = out[name] if isinstance(out[name], list) else [out[name]]
            out[name].append(value)
        else:
            out[name] = value
    return out


def _xml(body: bytes, operation: str) -> ElementTree.Element:
    try:
        return ElementTree.fromstring(body)
    except ElementTree.ParseError as err:
        raise ResponseParserError(f"{operation} answered with a body that is not XML: {err}") from None


def _query_result(body: bytes, operation: str) -> dict:
    root = _xml(body, operation)
    for child in root:
        if _local(child.tag) == f"{operation}Result":
            value = _element(child)
            return value if isinstance(value, dict) else {}
    return {}


class _S3(_Client):
    def __init__(self, region: str) -> None:
        super().__init__("s3", "s3", region)

    def _url(self, bucket: str, key: str = "", query: Optional[dict] = None) -> str:
        url = f"{self.endpoint}/{quote(bucket, safe='')}"
        if key:
            url += "/" + quote(key, safe="/~")
        if query:
            url += "?" + urlencode(sorted(query.items()), quote_via=quote, safe="~")
        return url

    def _send(self, operation: str, method: str, url: str, headers=None, body=None) -> http.Response:
        response = http.request(method, url, headers, body)
        if not response.ok:
            self._raise(response, operation)
        return response

    def get_object(self, Bucket: str, Key: str, Range: Optional[str] = None) -> dict:  # noqa: N803 - botocore's names
        """S3 GetObject: ``Body`` (:class:`StreamingBody`), ``ContentLength``,
        ``ContentType``, ``ETag``, ``LastModified``, ``Metadata``."""
        headers = {"range": Range} if Range else None
        response = self._send("GetObject", "GET", self._url(Bucket, Key), headers)
        return {**_object_head(response), "Body": StreamingBody(response)}

    def head_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        """S3 HeadObject: the metadata of :meth:`get_object` without ``Body``."""
        return _object_head(self._send("HeadObject", "HEAD", self._url(Bucket, Key)))

    def put_object(  # noqa: N803
        self,
        Bucket: str,
        Key: str,
        Body: http.Body = b"",
        ContentType: Optional[str] = None,
        Metadata: Optional[dict] = None,
    ) -> dict:
        """S3 PutObject: ``ETag``."""
        headers = {"content-type": ContentType} if ContentType else {}
        for name, value in (Metadata or {}).items():
            headers[f"x-amz-meta-{name}"] = value
        response = self._send("PutObject", "PUT", self._url(Bucket, Key), headers, Body)
        return {"ETag": response.headers.get("etag", "")}

    def delete_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803
        """S3 DeleteObject."""
        self._send("DeleteObject", "DELETE", self._url(Bucket, Key))
        return {}

    def list_objects_v2(  # noqa: N803
        self,
        Bucket: str,
        Prefix: Optional[str] = None,
        ContinuationToken: Optional[str] = None,
        MaxKeys: Optional[int] = None,
    ) -> dict:
        """S3 ListObjectsV2: ``Contents`` (``Key``, ``Size``, ``ETag``,
        ``LastModified``), ``KeyCount``, ``IsTruncated``, ``NextContinuationToken``."""
        query = {"list-type": "2"}
        if Prefix is not None:
            query["prefix"] = Prefix
        if ContinuationToken is not None:
            query["continuation-token"] = ContinuationToken
        if MaxKeys is not None:
            query["max-keys"] = str(MaxKeys)
        response = self._send("ListObjectsV2", "GET", self._url(Bucket, query=query))
        root = _xml(response.body, "ListObjectsV2")
        listing: dict = {"Contents": []}
        for child in root:
            name = _local(child.tag)
            if name == "Contents":
                entry = {_local(field.tag): field.text or "" for field in child}
                if "Size" in entry:
                    entry["Size"] = int(entry["Size"])
                listing["Contents"].append(entry)
            elif name in ("KeyCount", "MaxKeys"):
                listing[name] = int(child.text or 0)
            elif name == "IsTruncated":
                listing[name] = (child.text or "") == "true"
            elif name in ("Name", "Prefix", "NextContinuationToken", "ContinuationToken"):
                listing[name] = child.text or ""
        return listing

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        raise AttributeError(
            f"sfn_wasm_guest.aws's S3 client has {', '.join(_S3_OPERATIONS)}; not {name!r}"
        )


def _object_head(response: http.Response) -> dict:
    headers = response.headers
    head = {
        "ContentLength": int(headers.get("content-length", len(response.body)) or 0),
        "ContentType": headers.get("content-type", ""),
        "ETag": headers.get("etag", ""),
        "LastModified": headers.get("last-modified", ""),
        "Metadata": {
            name[len("x-amz-meta-"):]: value
            for name, value in headers.items()
            if name.startswith("x-amz-meta-")
        },
    }
    return head


def _error_of(response: http.Response) -> tuple[str, str]:
    """AWS's error code and message, from any protocol's error body, as botocore reads
    them: for JSON the query-compatible code (``x-amzn-query-error``), else ``__type``,
    ``code`` or ``x-amzn-errortype``, without a ``namespace#`` or ``:detail``; for XML
    ``Code``; with no body to read, the status (``"404"``) and its phrase."""
    text = response.body.decode("utf-8", "replace")
    query_error = (response.headers.get("x-amzn-query-error") or "").split(";")[0]
    try:
        reply = json.loads(text)
        if isinstance(reply, dict):
            code = str(
                query_error
                or reply.get("__type")
                or reply.get("code")
                or response.headers.get("x-amzn-errortype")
                or ""
            )
            code = code.split(":", 1)[0].rsplit("#", 1)[-1]
            message = reply.get("message") or reply.get("Message") or ""
            if code:
                return code, str(message)
    except ValueError:
        pass
    try:
        root = ElementTree.fromstring(text)
        code = next((n.text for n in root.iter() if _local(n.tag) == "Code"), None)
        message = next((n.text for n in root.iter() if _local(n.tag) == "Message"), None)
        if code:
            return code, message or ""
    except ElementTree.ParseError:
        pass
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = ""
    # Not the body: an unparsed body (a proxy's page, an emulator's trace) is not composed
    # for a Step Functions cause.
    return (query_error or str(response.status)), phrase
