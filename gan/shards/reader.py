"""Reads one shard's samples and checks them against the manifest: bounded retries for transient store errors,
and every bad shard (missing, corrupt, truncated, cut at a file boundary) counted — or fatal under --strict.

A tar cut exactly between two members is valid tar: WebDataset yields fewer samples with no error, so the only
way to notice is to compare the sample count with the manifest's.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Iterator

import webdataset as wds

from gan.shards import storage
from gan.shards.manifest import ShardInfo
from gan.shards.storage import StorageError, StoreUnreachable
from gan.shards.tar_walk import NotPlainTar, tar_samples

log = logging.getLogger(__name__)


class DataError(RuntimeError):
    """Training data cannot be read as promised; the message names the shard and the fix."""


def _transient_errors() -> tuple[type[BaseException], ...]:
    """Errors worth a retry from the shard's start: the connection, not the bytes, went wrong."""
    import botocore.exceptions
    import urllib3.exceptions

    return (botocore.exceptions.BotoCoreError, urllib3.exceptions.HTTPError, ConnectionError, TimeoutError)


@dataclass
class DataHealth:
    """What went wrong while reading, per rank; summed across ranks and logged as data/* metrics."""

    bad_shards: int = 0
    skipped_samples: int = 0
    read_retries: int = 0
    delivered: int = 0
    problems: list[str] = field(default_factory=list)
    bad_urls: set[str] = field(default_factory=set)  # not read again on a later pass over the same shards
    _reported: dict[str, float] = field(default_factory=dict)

    def as_metrics(self) -> dict[str, float]:
        return {"data/bad_shards": self.bad_shards, "data/skipped_samples": self.skipped_samples,
                "data/read_retries": self.read_retries}

    def unreported_metrics(self) -> dict[str, float]:
        """as_metrics() less what the previous call returned: each report of an epoch counts only its own share."""
        now = self.as_metrics()
        delta = {name: value - self._reported.get(name, 0) for name, value in now.items()}
        self._reported = now
        return delta


@dataclass(frozen=True)
class ReadPolicy:
    strict: bool = False
    attempts: int = 3  # reads of one shard before it counts as bad
    backoff_seconds: float = 0.5  # doubled after every failed attempt
    outage_seconds: float = 60.0  # how long an unreachable store is waited for before the run fails
    outage_poll_max: float = 5.0  # longest pause between two tries while the store is unreachable


def read_shard(url: str, shard: ShardInfo, health: DataHealth, policy: ReadPolicy,
               ours: bool = False) -> Iterator[dict]:
    """Raw samples of one shard. On a transient error the shard is re-opened and the samples already delivered
    are skipped, so a retry neither repeats nor loses a sample. `ours`: jobs.make_shards wrote it, so the lean tar
    walk reads it (gan/shards/tar_walk.py); anything else goes through WebDataset."""
    delivered, problem, attempt = 0, None, 0
    unreachable_since, outage_tries = None, 0
    lean = ours
    while True:
        try:
            for index, sample in enumerate(_lean_samples(url) if lean else wds.tarfile_samples([{"url": url}])):
                unreachable_since, outage_tries = None, 0  # the store answered: a later outage starts afresh
                if index >= delivered:
                    delivered += 1
                    health.delivered += 1
                    yield sample
            break
        except NotPlainTar as error:  # written by hand or by another tar tool: WebDataset reads every form
            log.info("%s holds a %s; reading it with WebDataset", url, error)
            lean = False
        except StoreUnreachable as error:
            # The store, not this shard, is gone: wait for it (a restart, a network blip) rather than skip
            # shard after shard; past the deadline the run fails and names the endpoint.
            unreachable_since = unreachable_since or time.monotonic()
            waited = time.monotonic() - unreachable_since
            if waited >= policy.outage_seconds:
                raise DataError(f"{_first_arg(error)}; still unreachable after {waited:.0f} s of retries "
                                f"(--store-outage-seconds {policy.outage_seconds:g})") from None
            health.read_retries += 1
            outage_tries += 1
            log.warning("object store unreachable for %.0f s, retrying %s: %s", waited, url, error)
            time.sleep(min(policy.backoff_seconds * 2 ** outage_tries, policy.outage_poll_max))
        except StorageError as error:
            raise DataError(_first_arg(error)) from None  # credentials or bucket: no later shard would do better
        except FileNotFoundError:
            problem = "missing"
            break
        except _transient_errors() as error:
            attempt += 1
            if attempt < policy.attempts:
                health.read_retries += 1
                time.sleep(policy.backoff_seconds * 2 ** (attempt - 1))
                continue
            problem = f"unreadable after {policy.attempts} attempts ({type(error).__name__}: {error})"
            break
        except Exception as error:  # noqa: BLE001 - tar/format errors of any kind mean a corrupt shard
            problem = f"corrupt ({type(error).__name__}: {error})"
            break
    if problem is None and delivered != shard.samples:
        problem = f"holds {delivered} samples, the manifest says {shard.samples} (truncated or replaced?)"
    if problem is not None:
        report_bad_shard(url, problem, max(shard.samples - delivered, 0), health, policy)


def _lean_samples(url: str) -> Iterator[dict]:
    with storage.open_stream(url) as stream:
        yield from tar_samples(stream, url)


def _first_arg(error: Exception) -> str:
    """The error's own message: WebDataset re-raises with the shard URL appended to args, which str() shows as a
    tuple."""
    return str(error.args[0]) if error.args else str(error)


def report_bad_shard(url: str, problem: str, lost_samples: int, health: DataHealth, policy: ReadPolicy) -> None:
    message = f"bad shard {url}: {problem}"
    if policy.strict:
        raise DataError(f"{message}; rebuild or re-upload it with jobs.make_shards, or run without --strict to "
                        f"skip bad shards")
    health.bad_shards += 1
    health.bad_urls.add(url)
    health.skipped_samples += lost_samples
    health.problems.append(message)
    log.warning("%s; skipped %d samples (%d bad shards so far)", message, lost_samples, health.bad_shards)


def skip_bad_sample(health: DataHealth, policy: ReadPolicy):
    """A WebDataset error handler for per-sample stages: count and skip, or re-raise under --strict."""
    def handler(error: Exception) -> bool:
        if policy.strict:
            raise DataError(f"bad sample: {error}; fix the shard or run without --strict") from error
        health.skipped_samples += 1
        if health.skipped_samples <= 10 or health.skipped_samples % 1000 == 0:
            log.warning("skipping a bad sample (%d so far): %s", health.skipped_samples, error)
        return True

    return handler
