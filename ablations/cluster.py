"""Starting or joining Ray for a sweep.

Without an address Ray starts in-process on this machine, listening on loopback only; with
``--address`` (or ``RAY_ADDRESS``) the sweep joins an existing cluster after checking, within
seconds, that the address answers and accepts this machine's credentials.
"""
from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys

from senet.errors import UserError

#: Experiment-state snapshots every second: after a SIGKILL of the driver, trials that finished
#: since the last snapshot would otherwise be run again on --resume (a snapshot costs ~20 ms).
_TUNE_ENV = {
    "TUNE_GLOBAL_CHECKPOINT_S": "1",
    "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",  # no tensorboardX logger; JSON and CSV are passed in
    "TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S": "0",
    "RAY_DEDUP_LOGS": "0",
}
#: Without --verbose the sweep's own table is the only progress output: Tune's legacy engine at
#: verbosity 0 prints nothing (the new one prints its banners at every verbosity).
_QUIET_ENV = {"RAY_AIR_NEW_OUTPUT": "0"}
#: Ray's switch for single-machine mode: node address 127.0.0.1 and every server bound to loopback.
_LOOPBACK_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
#: The local Ray's own log level. Tune hands the driver's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
#: AWS_SESSION_TOKEN to the trials as a runtime environment, which Ray's runtime-env agent writes, at
#: level info, into its log under the session folder: at warning, no secret reaches a log.
_LOG_LEVEL_ENV = {"RAY_LOGGER_LEVEL": "warning"}
#: Environment variables forwarded to the trials (fault injection, scratch location).
_FORWARD = ("SENET_FAIL_ONCE_AT_EPOCH", "SENET_FAIL_ONCE_DIR", "SENET_SCRATCH", "SENET_DATA")


def _split_address(address: str) -> tuple[str, int]:
    hostport = address.split("://", 1)[-1]
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UserError(f"bad Ray address {address!r}; expected HOST:PORT (the head's GCS port, "
                        "6379 by default), ray://HOST:PORT or auto")
    return host.strip("[]"), int(port)


def check_address(address: str, timeout_s: float = 3.0) -> None:
    """Fail within seconds, saying why, when a cluster address cannot be joined.

    ``ray.init`` on an unreachable address or without the cluster's token retries for ~20 s and
    then raises a bare ConnectionError; these checks name the cause instead.
    """
    if address == "auto":
        return
    host, port = _split_address(address)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        why = e.strerror or type(e).__name__
        raise UserError(f"cannot reach a Ray cluster at {host}:{port} ({why}); check --address / "
                        f"RAY_ADDRESS, or start a head node with `ray start --head --port {port}`") from None
    if address.startswith("ray://"):
        return  # Ray Client: authentication happens in ray.init
    probe = ("from ray._raylet import GcsClient\n"
             f"GcsClient(address={f'{host}:{port}'!r}).internal_kv_get(b'session_name', namespace=None, "
             "timeout=5)\n")
    try:
        r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        raise UserError(f"{host}:{port} accepts connections but does not answer as a Ray GCS within 30 s; "
                        "is it the head node's port (6379 by default)?") from None
    if r.returncode == 0:
        return
    err = r.stderr
    if "InvalidAuthToken" in err or "Authentication" in err or "Unauthenticated" in err:
        if os.environ.get("RAY_AUTH_MODE", "") != "token":
            raise UserError(f"the Ray cluster at {host}:{port} requires token authentication: set "
                            "RAY_AUTH_MODE=token and provide the cluster's token (RAY_AUTH_TOKEN, "
                            "RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token, copied from the head node)")
        raise UserError(f"the Ray cluster at {host}:{port} rejected this machine's auth token; set "
                        "RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH to the head node's ~/.ray/auth_token")
    last = [ln for ln in err.strip().splitlines() if ln.strip()]
    raise UserError(f"{host}:{port} is not a Ray cluster this machine can join: "
                    f"{last[-1] if last else 'unknown error'}")


def _runtime_env() -> dict:
    env = {k: os.environ[k] for k in _FORWARD if os.environ.get(k)}
    return {"env_vars": env} if env else {}


def connect(address: str | None, verbose: bool = True, checked: bool = False) -> bool:
    """Start or join Ray; return True when this call started it (and so must shut it down).

    ``verbose=False`` keeps Ray's and Tune's banners, log lines and the trials' own output off the
    terminal (the trials' errors are in their folders' ``error.txt`` and in the sweep's summary).
    ``checked``: the caller has already run :func:`check_address` on ``address``.
    """
    os.environ.update({k: v for k, v in _TUNE_ENV.items() if k not in os.environ})
    if not verbose:
        os.environ.update({k: v for k, v in _QUIET_ENV.items() if k not in os.environ})
    address = address or os.environ.get("RAY_ADDRESS") or None
    if not address:
        os.environ[_LOOPBACK_ENV] = "0"
        os.environ.update({k: v for k, v in _LOG_LEVEL_ENV.items() if k not in os.environ})
    import ray  # only now: the environment above must be set before Ray is imported

    if not verbose:
        # after the import, which sets up Ray's loggers: their warnings (the token-authentication
        # banner, Tune's per-trial tracebacks) would otherwise reach stderr between the table's lines
        for name in ("ray", "ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.CRITICAL)

    if ray.is_initialized():
        return False
    if address:
        if not checked:
            check_address(address)
        try:
            ray.init(address=address, runtime_env=_runtime_env() or None, log_to_driver=verbose,
                     configure_logging=False)
        except ConnectionError as e:
            raise UserError(f"could not join the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
    else:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # already-imported Ray: the same switch as the env var
        ray.init(address="local", include_dashboard=False, runtime_env=_runtime_env() or None,
                 configure_logging=False, log_to_driver=verbose,
                 _node_ip_address="127.0.0.1")
    return True
