"""What the browser check of the HTML report needs: an incident-like input, headless chromium, PNG pixels.

Debian's ``chromium`` (installed by `.ci/run`) renders the page: ``--dump-dom``
for the DOM after layout, ``--screenshot`` for the pixels. A missing chromium
skips the tests, except under ``CI=true``, where it fails them
(`local_server.system_binary`).
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

from llmpulse.events import CallEvent
from llmpulse.testing import make_call_event
from local_server import system_binary

INCIDENT_START = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)
INCIDENT_SPAN = timedelta(hours=2)
STORM = (timedelta(minutes=55), timedelta(minutes=95))
"""When the batch job of tenant "globex" hits gpt-4o-mini's rate limit, from the start."""

_MODELS = (
    ("gpt-4o-mini", 55, -0.9),
    ("gpt-4o", 25, -0.2),
    ("claude-haiku-4-5", 15, -0.7),
    ("claude-sonnet-4-6", 5, 0.3),
)
_TENANTS = (("acme", 40), ("globex", 25), ("initech", 15), ("umbrella", 12), ("hooli", 8))
_ROUTES = ("/chat", "/search", "/agent", "/summarize")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def incident_events(seed: int = 3) -> list[CallEvent]:
    """Two hours of calls, about one a second, with a 40-minute 429 storm in the middle.

    From `STORM`'s start, tenant "globex" adds a batch job on gpt-4o-mini
    (three times its usual calls); the model answers 429 to most calls,
    retries stretch latency, and for ten minutes a circuit breaker rejects
    calls. A few timeouts and 500s happen all along, as on any day.
    """
    rng = random.Random(seed)
    events: list[CallEvent] = []
    t = 0.0
    while t < INCIDENT_SPAN.total_seconds():
        at = timedelta(seconds=t)
        storm = STORM[0] <= at < STORM[1]
        model, _, mu = rng.choices(_MODELS, [w for _, w, _ in _MODELS])[0]
        tenant = rng.choices([name for name, _ in _TENANTS], [w for _, w in _TENANTS])[0]
        if storm and rng.random() < 0.5:  # the batch job
            tenant, model, mu = "globex", "gpt-4o-mini", -0.9
        latency = rng.lognormvariate(mu, 0.5)
        outcome, status, error_type, attempts, reason = "ok", 200, None, 1, None
        roll = rng.random()
        if storm and model == "gpt-4o-mini":
            if STORM[0] + timedelta(minutes=20) <= at < STORM[0] + timedelta(minutes=30) and roll < 0.3:
                outcome, status, attempts, reason, latency = "rejected", None, 0, "circuit_open", 0.0002
            elif roll < 0.75:
                outcome, status, error_type, attempts = "error", 429, "RateLimitError", 3
                latency += rng.uniform(2, 9)  # the backoff of three attempts
            elif roll < 0.9:
                attempts = 2
                latency += rng.uniform(1, 4)
        elif roll < 0.006:
            outcome, status, error_type, latency = "error", None, "APITimeoutError", 30.0 + rng.random()
        elif roll < 0.012:
            outcome, status, error_type = "error", 500, "InternalServerError"
        failed = outcome != "ok"
        events.append(
            make_call_event(
                call_id=f"c{len(events)}",
                model=model,
                tenant=tenant,
                route=rng.choice(_ROUTES),
                started_at=INCIDENT_START + at,
                latency_s=latency,
                outcome=outcome,
                http_status=status,
                error_type=error_type,
                rejected_reason=reason,
                attempts=attempts,
                retries=max(attempts - 1, 0),
                input_tokens=None if failed else rng.randint(200, 4000),
                output_tokens=None if failed else rng.randint(20, 700),
                cost_usd=None if failed else rng.randint(10, 4000) / 10**6,
            )
        )
        t += rng.expovariate(2.0 if storm else 1.0)
    return events


def chromium() -> str:
    """The chromium binary; skips (fails under CI=true) when it is not installed.

    Debian's is ``chromium``; a GitHub runner has Google Chrome instead (Ubuntu's ``chromium``
    package is a snap stub), which takes the same flags.
    """
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        path = shutil.which(name)
        if path is not None:
            return path
    return system_binary("chromium", "chromium")


def _run(args: list[str], profile: Path) -> subprocess.CompletedProcess[bytes]:
    # A fresh profile per run: nothing cached from another test, no first-run state.
    command = [chromium(), *_FLAGS, f"--user-data-dir={profile}", *args]
    return subprocess.run(command, capture_output=True, timeout=120, check=True)


def dump_dom(page: Path, profile: Path) -> str:
    """The DOM of ``page`` after chromium has parsed and laid it out."""
    return _run(["--dump-dom", page.as_uri()], profile).stdout.decode()


def screenshot(page: Path, png: Path, profile: Path, size: tuple[int, int]) -> None:
    """A ``size`` (width, height) screenshot of ``page`` into ``png``."""
    _run([f"--screenshot={png}", f"--window-size={size[0]},{size[1]}", page.as_uri()], profile)


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the rows of raw pixels (RGB or RGBA, 8 bits) of a non-interlaced PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert (depth, interlace) == (8, 0), (depth, interlace)
    assert colour in (2, 6), colour  # RGB or RGBA
    channels = 3 if colour == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    previous = bytearray(stride)
    for y in range(height):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = previous[i]
            corner = previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                predictor = left if pa <= pb and pa <= pc else up if pb <= pc else corner
                line[i] = (line[i] + predictor) & 0xFF
        rows.append(bytes(line))
        previous = line
    return width, height, rows
