"""Host the book's model server (``helpers.serving.app.create_app``) on Ray Serve.

Every replica builds the same FastAPI app that uvicorn serves elsewhere in
the book: ``@serve.ingress`` receives a builder, and each replica calls
``create_app()``, which reads its settings from the JSON file named by
``$MNIST_SERVING_SETTINGS`` (set through the replica's runtime environment).
The builder adds one middleware that names the answering replica in the
``X-Serve-Replica`` response header and logs the request id, status and
latency to the replica's Serve log.

Everything binds to 127.0.0.1; ``serve_session`` always shuts Serve and Ray
down, also when the body raises.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Iterator

import warnings

from pydantic.warnings import PydanticDeprecatedSince20
from tqdm import TqdmWarning

# Importing Ray 2.60 inside Jupyter emits three notices that concern Ray's
# own packaging, not the caller: pydantic v1-style Field arguments, tqdm's
# missing ipywidgets, and an INFO log line about the same ipywidgets.
logging.getLogger("ray.widgets.util").setLevel(logging.WARNING)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", PydanticDeprecatedSince20)
    warnings.simplefilter("ignore", TqdmWarning)
    import ray
    from ray import serve

from ..serving import app as serving_app
from ..serving.launch import free_port
from ..serving.registry import ModelRegistry
from ..serving.settings import SETTINGS_ENV, ServingSettings
from ..serving.state import zoo_architecture
from .. import zoo

APP_NAME = "mnist"
DEPLOYMENT_NAME = "ModelServer"
REPLICA_HEADER = "X-Serve-Replica"
REQUEST_ID_HEADER = serving_app.REQUEST_ID_HEADER
REPLICA_ACTOR_PREFIX = "SERVE_REPLICA::"
SERVE_CONTROLLER_NAME = "SERVE_CONTROLLER_ACTOR"
SERVE_NAMESPACE = "serve"

log = logging.getLogger("ray.serve")


def build_replica_app():
    """Return the book's FastAPI app for one replica, with replica-id header and request log."""
    from fastapi import Request

    app = serving_app.create_app()
    replica = serve.get_replica_context().replica_id.unique_id

    @app.middleware("http")
    async def tag_replica(request: Request, call_next):
        started = time.perf_counter()
        response = await call_next(request)
        latency_ms = (time.perf_counter() - started) * 1000
        response.headers[REPLICA_HEADER] = replica
        log.info(
            "request_id=%s replica=%s path=%s status=%d latency_ms=%.1f",
            response.headers.get(REQUEST_ID_HEADER, "-"), replica, request.url.path,
            response.status_code, latency_ms,
        )
        return response

    return app


@serve.deployment(name=DEPLOYMENT_NAME, ray_actor_options={"num_cpus": 0}, max_ongoing_requests=8, health_check_period_s=1)
@serve.ingress(build_replica_app)
class ModelServer:
    """A Serve replica that hosts ``create_app()``; all routes come from the app."""


def prepare_registry(root: str | Path, kind: str = "mlp") -> str:
    """Register ``helpers.zoo``'s trained ``kind`` model in a registry at ``root``, promote it, return the version.

    The replicas then start from a registry with a production model and skip
    their own bootstrap, so several replicas never train or register at once.
    """
    registry = ModelRegistry(root)
    entry = registry.register(zoo.trained_model(kind), zoo_architecture(kind), name=f"zoo-{kind}")
    registry.promote(entry.version)
    return entry.version


@contextlib.contextmanager
def serve_session(num_cpus: int = 2, port: int | None = None, object_store_mb: int = 256) -> Iterator[str]:
    """Start Ray and Serve's HTTP proxy on 127.0.0.1, yield the proxy URL, and always shut both down.

    The dashboard is off and replica logs stay in Ray's session folder
    instead of being copied to this process's output.
    """
    if num_cpus < 1:
        raise ValueError(f"num_cpus must be at least 1, got {num_cpus}")
    port = port if port is not None else free_port()
    ray.init(
        # Ray's own services (GCS, raylet, object store) bind to this address.
        _node_ip_address="127.0.0.1",
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=object_store_mb * 2**20,
        logging_level=logging.WARNING,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port}, logging_config={"log_level": "INFO"})
        yield f"http://127.0.0.1:{port}"
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        ray.shutdown()


def ray_is_running() -> bool:
    """Return whether this process is connected to a Ray cluster."""
    return ray.is_initialized()


def deploy(settings: ServingSettings, settings_path: str | Path, num_replicas: int = 2, timeout_s: float = 120) -> None:
    """Deploy (or redeploy with a new replica count) the model server and wait until it is running.

    ``settings`` are written to ``settings_path``; the replicas read them
    there, so the path must be readable by every replica (one machine, or a
    shared file system on a cluster).
    """
    if not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
    settings_path = Path(settings_path).resolve()
    settings.to_json(settings_path)
    deployment = ModelServer.options(
        num_replicas=num_replicas,
        ray_actor_options={"num_cpus": 0, "runtime_env": {"env_vars": {SETTINGS_ENV: str(settings_path), "OMP_NUM_THREADS": "1"}}},
    )
    # external_scaler_enabled lets ``scale`` change the replica count in
    # place; a second serve.run would replace every replica instead.
    serve.run(deployment.bind(), name=APP_NAME, route_prefix="/", blocking=False, external_scaler_enabled=True)
    wait_for_replicas(num_replicas, timeout_s)


def scale(num_replicas: int, timeout_s: float = 120) -> float:
    """Set the running deployment's replica count in place; return the seconds until it is reached.

    Existing replicas keep serving: scaling up adds replicas, scaling down
    drains and stops the surplus ones.
    """
    from ray.serve._private.common import DeploymentID

    if not isinstance(num_replicas, int) or num_replicas < 1:
        raise ValueError(f"num_replicas must be a positive integer, got {num_replicas!r}")
    # NOTE: this calls the Serve controller the way the dashboard's REST
    # endpoint POST /api/v1/applications/<app>/deployments/<name>/scale does
    # (Ray 2.60); DeploymentID and the controller method are Ray internals.
    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    deployment_id = DeploymentID(name=DEPLOYMENT_NAME, app_name=APP_NAME)
    ray.get(controller.update_deployment_replicas.remote(deployment_id, num_replicas))
    return wait_for_replicas(num_replicas, timeout_s)


def replica_states() -> dict[str, int]:
    """Return the controller's count of replicas per state, e.g. ``{"RUNNING": 2}``."""
    status = serve.status()
    application = status.applications.get(APP_NAME)
    if application is None or DEPLOYMENT_NAME not in application.deployments:
        return {}
    return {str(state): count for state, count in application.deployments[DEPLOYMENT_NAME].replica_states.items()}


def wait_for_replicas(count: int, timeout_s: float = 120) -> float:
    """Wait until exactly ``count`` replicas run and the app is healthy; return the seconds waited."""
    started = time.monotonic()
    while True:
        states = replica_states()
        status = serve.status().applications.get(APP_NAME)
        if states == {"RUNNING": count} and status is not None and str(status.status).endswith("RUNNING"):
            return time.monotonic() - started
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"replicas did not reach {count} RUNNING within {timeout_s} s; states: {states}")
        time.sleep(0.2)


def replica_actor_names() -> list[str]:
    """Return the names of the live replica actors, as the Serve controller registered them."""
    names = [
        entry["name"] for entry in ray.util.list_named_actors(all_namespaces=True)
        if entry["name"].startswith(REPLICA_ACTOR_PREFIX) and f"#{DEPLOYMENT_NAME}#" in entry["name"]
    ]
    return sorted(names)


def replica_id(actor_name: str) -> str:
    """Return the short replica id (the text after the last ``#``) of a replica actor name."""
    return actor_name.rsplit("#", 1)[-1]


def kill_replica(actor_name: str) -> None:
    """Kill one replica actor at once, as a crash would; the Serve controller starts a replacement."""
    actor = ray.get_actor(actor_name, namespace=SERVE_NAMESPACE)
    ray.kill(actor, no_restart=True)


def serve_log_lines(text: str, limit: int = 20) -> list[str]:
    """Return up to ``limit`` lines containing ``text`` from this Ray session's Serve logs.

    Each line is prefixed with the log file's name (proxy or replica), not its path.
    """
    logs_dir = Path(ray._private.worker._global_node.get_logs_dir_path()) / "serve"
    matches = []
    for path in sorted(logs_dir.glob("*.log")):
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if text in line:
                    matches.append(f"{path.name.split('_')[0]}: {line.strip()}")
                    if len(matches) >= limit:
                        return matches
    return matches
