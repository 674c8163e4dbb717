"""`kimi serve`'s own configuration: address, key, limits and idle timeout, checked before any load."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from kimi_cli.errors import UsageError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
#: Request bodies above this are refused with 413 (base64 images are 4/3 of their bytes).
DEFAULT_MAX_BODY_MB = 64
DEFAULT_MAX_IMAGES = 64
#: Requests waiting for the one generation slot; more get 503.
DEFAULT_MAX_QUEUE = 64
#: Pixels of one decoded image (Pillow's own hard limit is twice its 89 MP warning).
MAX_IMAGE_PIXELS = 2 * 89_478_485
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h)?\s*$", re.I)
_UNIT_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}


@dataclass(frozen=True)
class ServeConfig:
    """What `kimi serve` was asked for (the model settings travel separately)."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    api_key: str | None = None
    idle_timeout_s: float | None = None
    max_body_bytes: int = DEFAULT_MAX_BODY_MB * 1024 * 1024
    max_images: int = DEFAULT_MAX_IMAGES
    max_queue: int = DEFAULT_MAX_QUEUE
    max_new_tokens: int = 32768
    max_image_pixels: int = MAX_IMAGE_PIXELS


def parse_duration(text: str | None) -> float | None:
    """`30m`, `90s`, `1.5h`, `600` (seconds) -> seconds; `0`, `off`, `never` or nothing -> None."""
    if text is None or text.strip().lower() in ("", "0", "off", "never", "none"):
        return None
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"--idle-timeout {text}: not a duration", hint="use e.g. 30m, 90s, 2h, or 0 for never")
    seconds = float(match.group(1)) * _UNIT_S[(match.group(2) or "s").lower()]
    return seconds or None


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, api_key: str | None, insecure_no_key: bool) -> None:
    """Any address other than loopback needs a key (or an explicit `--insecure-no-key`)."""
    if is_loopback(host) or api_key or insecure_no_key:
        return
    raise UsageError(f"--host {host} would let anyone who can reach this machine use the model",
                     hint="set --api-key (or KIMI_API_KEY), or pass --insecure-no-key if the network is trusted")
