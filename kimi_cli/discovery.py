"""How a running `kimi serve` is found by `kimi ask`/`kimi chat` on the same machine.

The server writes `$XDG_RUNTIME_DIR/kimi/serve-PORT.json` (a private directory, the file mode 0600)
naming its address, model, process id and a random token that the server requires on every request,
so another user of the machine can neither read the token nor use your GPU. A client accepts a file
only if it is a regular file owned by the same user and not readable by others, the process is
alive, and `/health` at the address answers with the same instance id; anything else is stale and
ignored. Without `XDG_RUNTIME_DIR` the directory is `$TMPDIR/kimi-UID` (created 0700).

No heavy imports: this runs on every `kimi ask --backend auto`.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from kimi_cli.textsafe import json_loads

HEALTH_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ServerInfo:
    """One running server, as its discovery file describes it."""

    host: str
    port: int
    model: str  # `model_key` of the served checkpoint
    model_id: str  # the id the server answers to in requests
    pid: int
    token: str
    instance: str

    @property
    def api_base(self) -> str:
        """The OpenAI base URL (`http://127.0.0.1:8765/v1`)."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else "::1" if self.host == "::" else self.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/v1"


def runtime_dir(env: Mapping[str, str] | None = None) -> Path:
    """The private directory discovery files live in."""
    env = os.environ if env is None else env
    base = env.get("XDG_RUNTIME_DIR")
    if base:
        return Path(base) / "kimi"
    return Path(tempfile.gettempdir()) / f"kimi-{os.getuid()}"


def model_key(spec: str) -> str:
    """A model spec as a comparable key: an existing local directory by its real path, else the hub id."""
    path = Path(spec).expanduser()
    try:
        if path.is_dir():
            return str(path.resolve())
    except OSError:
        pass
    return spec


def new_info(host: str, port: int, model_spec: str, model_id: str) -> ServerInfo:
    """The description of a server about to start, with a fresh token and instance id."""
    return ServerInfo(host=host, port=port, model=model_key(model_spec), model_id=model_id, pid=os.getpid(),
                      token=secrets.token_urlsafe(32), instance=secrets.token_hex(8))


def write_info(info: ServerInfo, env: Mapping[str, str] | None = None) -> Path:
    """Write the discovery file (0600 in a 0700 directory); returns its path."""
    folder = runtime_dir(env)
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    path = folder / f"serve-{info.port}.json"
    tmp = folder / f".serve-{info.port}-{info.instance}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(asdict(info), handle)
    os.replace(tmp, path)
    return path


def remove_info(path: Path, info: ServerInfo) -> None:
    """Remove our discovery file (only if it is still ours: a newer server may have replaced it)."""
    current = read_info(path)
    if current is not None and current.instance == info.instance:
        path.unlink(missing_ok=True)


def read_info(path: Path) -> ServerInfo | None:
    """The file's contents if it is private, ours and well-formed; else None."""
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
            return None
        data = json_loads(path.read_text(encoding="utf-8"))
        return ServerInfo(host=str(data["host"]), port=int(data["port"]), model=str(data["model"]),
                          model_id=str(data["model_id"]), pid=int(data["pid"]), token=str(data["token"]),
                          instance=str(data["instance"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def find_server(model_spec: str, env: Mapping[str, str] | None = None) -> ServerInfo | None:
    """A live server of the same model, or None (stale or foreign files are ignored)."""
    folder = runtime_dir(env)
    key = model_key(model_spec)
    try:
        paths = sorted(folder.glob("serve-*.json"))
    except OSError:
        return None
    for path in paths:
        info = read_info(path)
        if info is not None and info.model == key and _alive(info):
            return info
    return None


def _alive(info: ServerInfo) -> bool:
    """The process exists and `/health` at its address answers with its instance id."""
    try:
        os.kill(info.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process has this pid: not our server
    import http.client

    host = info.api_base.split("//", 1)[1].rsplit(":", 1)[0].strip("[]")
    conn = http.client.HTTPConnection(host, info.port, timeout=HEALTH_TIMEOUT_S)
    try:
        conn.request("GET", "/health")
        response = conn.getresponse()
        body = json_loads(response.read(4096) or b"{}")
        return response.status == 200 and body.get("instance") == info.instance
    except (OSError, ValueError, http.client.HTTPException):
        return False
    finally:
        conn.close()
