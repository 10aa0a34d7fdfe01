"""Where bytes live: local paths or s3:// URIs behind the same few calls. Nothing above this knows which.

S3 goes through one boto3 client per process. Endpoint, region and credentials come from the standard AWS chain
(AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, instance profiles, ~/.aws); `configure(endpoint_url=...)` may override the
endpoint from the job config. Credentials are never read, stored or logged here.
"""
from __future__ import annotations

import functools
import io
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable
from urllib.parse import urlparse

import webdataset as wds

_endpoint_override = ""
# Large shards go up in 8 MiB parts, so a dropped connection costs one part, not the whole file.
_MULTIPART_BYTES = 8 * 1024 * 1024


class StorageError(RuntimeError):
    """A store refused or could not be reached; the message names the location, the endpoint and the fix."""


class StoreUnreachable(StorageError):
    """No connection to the store at all (down, restarting, network gone): worth waiting for, unlike a refusal."""


def configure(endpoint_url: str = "") -> None:
    """Use this S3 endpoint instead of the one the AWS environment names (AWS_ENDPOINT_URL)."""
    global _endpoint_override
    if endpoint_url != _endpoint_override:
        _endpoint_override = endpoint_url
        _s3_client.cache_clear()


def endpoint_url() -> str:
    """The S3 endpoint in force ('' = AWS's own)."""
    return _endpoint_override or os.environ.get("AWS_ENDPOINT_URL_S3", "") or os.environ.get("AWS_ENDPOINT_URL", "")


def is_s3(location: str) -> bool:
    return location.startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    parsed = urlparse(uri)
    return parsed.netloc, parsed.path.lstrip("/")


def join(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}" if "://" in root else str(Path(root) / name)


@functools.lru_cache(maxsize=1)
def _s3_client():
    import boto3
    from botocore.config import Config

    config = Config(retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=30)
    return boto3.session.Session().client("s3", endpoint_url=endpoint_url() or None, config=config)


# A forked child (a DataLoader worker) must not share its parent's client: urllib3's pooled sockets would be read
# by two processes at once.
os.register_at_fork(after_in_child=_s3_client.cache_clear)


def s3_client():
    """The process's one S3 client (boto3 clients are thread-safe; sessions are not, hence one of each)."""
    return _s3_client()


def _describe(error: Exception, location: str) -> StorageError:
    """Turn a botocore error into one line that says what failed and what to do."""
    from botocore.exceptions import ClientError, ConnectionClosedError, EndpointConnectionError, NoCredentialsError

    where = f"{location} (endpoint {endpoint_url() or 'AWS default'})"
    if isinstance(error, NoCredentialsError):
        return StorageError(f"{where}: no S3 credentials; set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or an "
                            f"instance profile")
    if isinstance(error, (EndpointConnectionError, ConnectionClosedError)):
        return StoreUnreachable(f"{where}: S3 endpoint unreachable; check AWS_ENDPOINT_URL / --s3-endpoint-url and that "
                            f"the store is running")
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken",
                    "ExpiredToken"):
            return StorageError(f"{where}: access denied ({code}); check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
                                f"(or the instance profile) and the bucket policy")
        if code in ("NoSuchBucket",):
            return StorageError(f"{where}: bucket does not exist; create it or fix the s3:// URI")
        return StorageError(f"{where}: {code or error}")
    return StorageError(f"{where}: {error}")


def check_bucket(location: str) -> None:
    """Fail now, naming the bucket and the fix, when an s3:// location's bucket is missing or refused."""
    if not is_s3(location):
        return
    bucket, _ = split_s3(location)
    try:
        s3_client().head_bucket(Bucket=bucket)
    except Exception as error:
        from botocore.exceptions import ClientError

        if isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
            raise StorageError(f"{location} (endpoint {endpoint_url() or 'AWS default'}): bucket {bucket!r} does not "
                               f"exist; create it or fix the s3:// URI") from None
        raise _describe(error, location) from error


def _is_missing(error: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(error, ClientError) and error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404")


def read_bytes(location: str) -> bytes:
    """Whole object or file; FileNotFoundError when it does not exist, StorageError when the store refuses."""
    if not is_s3(location):
        return Path(location).read_bytes()
    bucket, key = split_s3(location)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:
        if _is_missing(error):
            raise FileNotFoundError(location) from None
        raise _describe(error, location) from error


def list_prefix(prefix: str) -> list[str]:
    """Every file or object whose location starts with `prefix` (a folder and a name's start), sorted; S3 lists by
    ListObjectsV2 pages, so a prefix of 100,000 objects costs 100 requests."""
    if not is_s3(prefix):
        folder, start = (Path(prefix), "") if prefix.endswith("/") else (Path(prefix).parent, Path(prefix).name)
        if not folder.is_dir():
            return []
        return sorted(str(path) for path in folder.iterdir() if path.name.startswith(start) and path.is_file())
    bucket, key = split_s3(prefix)
    found = []
    try:
        for page in s3_client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            found += [f"s3://{bucket}/{item['Key']}" for item in page.get("Contents", [])]
    except Exception as error:
        raise _describe(error, prefix) from error
    return sorted(found)


def write_bytes(location: str, data: bytes) -> None:
    """Write whole or not at all: locally via rename, on S3 by the object store's own atomic PUT."""
    write_with(location, lambda stream: stream.write(data))


def write_with(location: str, write: Callable[[IO[bytes]], Any]) -> None:
    """`write(stream)` fills the file, whole or not at all. Locally it writes straight into a temporary file that is
    then renamed over `location` (no in-memory copy: a 26 MB checkpoint state took 0.06 s through memory, 0.02 s
    direct); on S3 it writes into memory and PUTs that (the object store's own atomic write)."""
    if is_s3(location):
        from boto3.s3.transfer import TransferConfig

        buffer = io.BytesIO()
        write(buffer)
        buffer.seek(0)
        bucket, key = split_s3(location)
        transfer = TransferConfig(multipart_threshold=_MULTIPART_BYTES, multipart_chunksize=_MULTIPART_BYTES)
        try:
            s3_client().upload_fileobj(buffer, bucket, key, Config=transfer)
        except Exception as error:
            raise _describe(error, location) from error
        return
    path = Path(location)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as tmp:
        write(tmp)
    os.replace(tmp.name, path)


def open_stream(location: str) -> IO[bytes]:
    """A readable stream: the S3 GetObject body (read as it arrives) or a local file."""
    if not is_s3(location):
        return open(location, "rb")
    bucket, key = split_s3(location)
    try:
        return s3_client().get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as error:
        if _is_missing(error):
            raise FileNotFoundError(location) from None
        raise _describe(error, location) from error


def _gopen_s3(url: str, mode: str = "rb", bufsize: int = 8192, **_: object) -> IO[bytes]:
    if mode[0] != "r":
        raise ValueError(f"{url}: WebDataset writes to S3 go through storage.write_bytes, not gopen")
    return open_stream(url)


# WebDataset opens "s3://..." URLs through this table; without it, it would shell out to the aws CLI.
wds.gopen_schemes["s3"] = _gopen_s3


def pyarrow_filesystem(location: str):
    """(filesystem, path) for Ray Train's RunConfig: None for local paths (Ray's default), else an S3FileSystem
    pointed explicitly at our endpoint, since pyarrow does not read every AWS endpoint variable."""
    if not is_s3(location):
        return None, location
    from pyarrow import fs

    endpoint = endpoint_url()
    kwargs = {}
    if endpoint:
        parsed = urlparse(endpoint)
        kwargs = {"endpoint_override": parsed.netloc, "scheme": parsed.scheme or "https"}
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    bucket, key = split_s3(location)
    return fs.S3FileSystem(**kwargs), f"{bucket}/{key}".rstrip("/")
