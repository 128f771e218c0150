"""`astra play`: drive a world model with keys, in the terminal or in a local web page.

A `PlaySession` turns the keys held for one step into the toy world's raw action stream (the world
integrates its controls, e.g. a camera pose), feeds it to the model and returns the generated frames.
The terminal mode reads keys (single key presses on a terminal, or lines such as `w w+left d` from a
pipe), shows the newest frame in ANSI colour and can write the whole run to a video. The web mode
(`--web`) serves one page on 127.0.0.1: keys and buttons post actions, and every generated frame is
pushed back as a server-sent event the moment it is decoded.
"""

from __future__ import annotations

import base64
import errno
import io
import json
import queue
import re
import socket
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import torch

from astra_core.data.video import frames_to_uint8
from astra_core.errors import AstraError, ConfigError
from astra_core.modality import raw_rows
from astra_core.world import WorldModel

KEY_ALIASES = {"ARROWUP": "UP", "ARROWDOWN": "DOWN", "ARROWLEFT": "LEFT", "ARROWRIGHT": "RIGHT", " ": "SPACE"}
MAX_MESSAGE_BYTES = 4096
MAX_QUEUED_STEPS = 16
MAX_CONNECTIONS = 32  # open connections at once (event streams included); more get 503
KEPT_FRAMES = 64  # frame events the web server keeps for late subscribers
KEPT_STEPS = 256  # steps a web session keeps (memory stays flat however long it runs)
REQUEST_TIMEOUT_S = 10.0  # a request whose headers or body do not arrive within this is dropped
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "[::1]")


def has_key_controls(world: Any) -> bool:
    """A world `astra play` can drive: it lists its `keys` and turns them into actions (`stream_for_keys`)."""
    return bool(getattr(world, "keys", ())) and hasattr(world, "stream_for_keys")


def default_world(model: WorldModel):
    """The toy world `astra play` drives without --embodiment: the keyboard game when the model drives it,
    else the first registered world with key controls whose modality the model has."""
    from astra_core.plugins import get_registry

    playable = [w for w in get_registry().worlds.values() if w.modality in model.modalities and has_key_controls(w)]
    if not playable:
        raise ConfigError(
            f"no registered toy world with key controls uses this model's modalities {sorted(model.modalities)}; "
            "play beside a real environment with --env"
        )
    return next((w for w in playable if w.name == "keyboard_game"), playable[0])


@dataclass
class PlayStep:
    index: int  # step number, from 1
    keys: list[str]
    frames: torch.Tensor  # [3, n, H, W] in [-1, 1]
    first_frame: int  # index of the step's first frame in the whole run (frame 0 is the start)


@dataclass
class PlaySession:
    """One interactive episode driven by keys (batch 1): a toy world, or a real environment wrapped by
    `astra_core.apps.play_env.EnvWorld`, whose own frames are then shown beside the model's."""

    model: WorldModel
    world: Any
    seed: int = 0
    trace: list[PlayStep] = field(default_factory=list)
    max_trace: int | None = None  # keep only the newest steps (a long web session); None: the whole run

    def __post_init__(self) -> None:
        if self.world.modality not in self.model.modalities:
            raise AstraError(
                f"{self.world.name}: the model has no {self.world.modality!r} modality "
                f"(it has {sorted(self.model.modalities)})"
            )
        self.keys = tuple(getattr(self.world, "keys", ()))
        if not has_key_controls(self.world):
            raise AstraError(f"{self.world.name}: this world defines no key controls, so it cannot be played")
        self.reset()

    @property
    def frames_per_step(self) -> int:
        return self.model.frames_per_step

    @property
    def side_by_side(self) -> bool:
        """The world is a real environment whose own frames are shown beside the model's."""
        return bool(getattr(self.world, "side_by_side", False))

    def reset(self) -> torch.Tensor:
        """Back to the world's start; returns the start frame [3, H, W]."""
        self.state = self.world.initial_state(self.seed)
        start = self.world.render_states(self.seed, [self.state])[0]  # [3, H, W]
        if hasattr(self.world, "start_stream"):  # a real environment: asking for a stream would step it
            first_row = self.world.start_stream(self.state)
        else:
            first_row = raw_rows(self.world.stream_for_keys(self.state, (), 1), 0, 1)
        self.model.reset(start[:, None], {self.world.modality: first_row})
        # Beside a real environment the session shows the model's frames left and the environment's right.
        self.start = _beside(start[:, None], start[:, None])[:, 0] if self.side_by_side else start
        self.trace = []
        self.steps_taken = 0
        self.frame_count = 1
        return self.start

    def warm_up(self) -> None:
        """Step until the history window is full, then start over: a compiled model meets every history
        length once here, so no key press waits for the compiler later."""
        history = self.model.net.config.history
        for _ in range(history.window // history.chunk_size + 2):
            self.step([])
        self.reset()

    def parse_keys(self, keys: Any) -> list[str]:
        """A list of key names (case-free; browser names such as ArrowUp accepted) -> canonical names."""
        if not isinstance(keys, (list, tuple)):
            raise AstraError(f"keys: expected a list of key names, got {type(keys).__name__}")
        if len(keys) > len(self.keys):
            raise AstraError(f"keys: at most {len(self.keys)} keys at once, got {len(keys)}")
        out = []
        for key in keys:
            if not isinstance(key, str):
                raise AstraError(f"keys: expected key names (strings), got {key!r}")
            name = KEY_ALIASES.get(key.upper(), KEY_ALIASES.get(key, key.upper()))
            if name not in self.keys:
                raise AstraError(f"keys: unknown key {key!r}; use {list(self.keys)}")
            if name not in out:
                out.append(name)
        return out

    def step(self, keys: Any) -> PlayStep:
        """Hold `keys` for one model step -> the generated frames."""
        names = self.parse_keys(keys)
        n = self.frames_per_step
        stream = self.world.stream_for_keys(self.state, names, n)
        states, self.state = self.world.advance(self.state, raw_rows(stream, 1, None))
        frames = self.model.step({self.world.modality: raw_rows(stream, 1, None)}).float()
        if self.side_by_side:
            frames = _beside(frames, self.world.truth(states).to(frames))
        record = PlayStep(self.steps_taken + 1, names, frames, self.frame_count)
        self.trace.append(record)
        if self.max_trace is not None and len(self.trace) > self.max_trace:
            del self.trace[: len(self.trace) - self.max_trace]
        self.steps_taken += 1
        self.frame_count += frames.shape[1]
        return record

    def video(self) -> torch.Tensor:
        """The whole run so far, start frame first: [3, T, H, W] (with `max_trace`, the newest steps)."""
        return torch.cat([self.start[:, None]] + [s.frames for s in self.trace], dim=1)

    def trace_json(self) -> list[dict]:
        return [{"step": s.index, "keys": s.keys, "first_frame": s.first_frame} for s in self.trace]


def _beside(model: torch.Tensor, truth: torch.Tensor, gap: int = 2) -> torch.Tensor:
    """Two clips [3, n, H, W] side by side with a white bar between: [3, n, H, 2·W + gap]."""
    bar = torch.ones(3, model.shape[1], model.shape[2], gap, dtype=model.dtype)
    return torch.cat([model, bar, truth], dim=-1)


def png_bytes(frame: torch.Tensor, scale: int = 4) -> bytes:
    """A frame [3, H, W] in [-1, 1] -> PNG bytes, nearest-neighbour upscaled."""
    from PIL import Image

    img = frames_to_uint8(frame[:, None])[0]
    if scale > 1:
        img = img.repeat(scale, axis=0).repeat(scale, axis=1)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------
# Terminal
# ------------------------------------------------------------------------------------------------

TERMINAL_KEYS = {"w": "W", "a": "A", "s": "S", "d": "D", " ": "SPACE", "\x1b[A": "UP", "\x1b[B": "DOWN"}
TERMINAL_KEYS |= {"\x1b[D": "LEFT", "\x1b[C": "RIGHT", "i": "UP", "k": "DOWN", "j": "LEFT", "l": "RIGHT"}


def ansi_frame(frame: torch.Tensor) -> str:
    """A frame [3, H, W] as 24-bit ANSI colour text, two pixel rows per line (upper half blocks)."""
    img = frames_to_uint8(frame[:, None])[0]
    if img.shape[0] % 2:
        img = np.concatenate([img, img[-1:]], axis=0)
    lines = []
    for top, bottom in zip(img[0::2], img[1::2]):
        cells = [f"\x1b[38;2;{a[0]};{a[1]};{a[2]}m\x1b[48;2;{b[0]};{b[1]};{b[2]}m▀" for a, b in zip(top, bottom)]
        lines.append("".join(cells) + "\x1b[0m")
    return "\n".join(lines)


def parse_line(line: str) -> list[list[str]]:
    """One line of the piped terminal mode -> steps: space-separated tokens, '+' joins keys held together
    ("w w+left d"); "." is a step with no key held."""
    steps = []
    for token in line.split():
        steps.append([] if token == "." else [k for k in token.split("+") if k])
    return steps


def play_terminal(session: PlaySession, out: Path | None = None, preview: bool = True, script: str | None = None):
    """Run the terminal mode: single key presses on a terminal (q quits), otherwise lines from stdin
    (or `script`), one token per step. Returns the session's trace."""
    world = session.world
    show = preview and sys.stdout.isatty()

    def render(step: PlayStep | None) -> None:
        frame = session.start if step is None else step.frames[:, -1]
        if show:
            sys.stdout.write("\x1b[H\x1b[2J" + ansi_frame(frame) + "\n")
        label = "start" if step is None else f"step {step.index}: {'+'.join(step.keys) or '(none)'}"
        hint = f" | {world.key_help}; q quits" if step is None else ""
        sys.stdout.write(f"{world.name} | {label} | frame {session.frame_count - 1}{hint}\n")
        sys.stdout.flush()

    render(None)
    try:
        if script is not None:
            for keys in parse_line(script):
                render(session.step(keys))
        elif sys.stdin.isatty():
            for keys in _raw_keys():
                render(session.step(keys))
        else:
            for line in sys.stdin:
                if line.strip().lower() in ("q", "quit"):
                    break
                for keys in parse_line(line):
                    try:
                        render(session.step(keys))
                    except AstraError as err:
                        print(f"error: {err}", file=sys.stderr)
    except KeyboardInterrupt:  # Ctrl-C ends the run like q: what was played is still written
        print("\ninterrupted", file=sys.stderr)
    if out is not None:
        from astra_core.data.video import write_mp4

        fps = float(getattr(world, "fps", 10.0))
        frames = frames_to_uint8(session.video())
        write_mp4(out, frames.repeat(2, axis=1).repeat(2, axis=2), fps=fps)
        print(f"written: {out} ({frames.shape[0]} frames)")
    return session.trace_json()


def _raw_keys():
    """Key presses from a terminal in cbreak mode, as one-key steps; q or Ctrl-D ends."""
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    try:
        tty.setcbreak(fd, termios.TCSANOW)  # not TCSAFLUSH: keys typed ahead are kept
        while True:
            ch = sys.stdin.read(1)
            if ch in ("q", "\x04", ""):
                return
            if ch == "\x1b":
                ch += sys.stdin.read(2)
            key = TERMINAL_KEYS.get(ch.lower() if len(ch) == 1 else ch)
            yield [key] if key else []
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# ------------------------------------------------------------------------------------------------
# Web
# ------------------------------------------------------------------------------------------------


class PlayServer:
    """The `--web` mode: a threaded HTTP server around one `PlaySession`. Steps run one at a time on a
    worker thread; every frame is sent to all open event streams as soon as its step is decoded."""

    def __init__(
        self,
        session: PlaySession,
        host: str = "127.0.0.1",
        port: int = 8000,
        scale: int = 4,
        timeout: float = REQUEST_TIMEOUT_S,
        max_connections: int = MAX_CONNECTIONS,
    ):
        self.session, self.scale, self.timeout = session, scale, timeout
        if session.max_trace is None:
            session.max_trace = KEPT_STEPS
        self.steps: queue.Queue = queue.Queue(maxsize=MAX_QUEUED_STEPS)
        self.listeners: list[queue.Queue] = []
        self.lock = threading.Lock()
        self.frames: deque[dict] = deque(maxlen=KEPT_FRAMES)  # the newest frame events, for late subscribers
        self.frames_sent = 0
        self.error: str | None = None
        try:
            self.httpd = _BoundedHTTPServer((host, port), _handler(self), max_connections)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                raise AstraError(f"port {port} on {host} is in use; pass --port 0 to take any free port") from None
            raise AstraError(f"cannot serve on {host}:{port}: {err.strerror or err}") from None
        self.httpd.daemon_threads = True
        bound = self.httpd.server_address[1]
        names = set(LOOPBACK_HOSTS) | {host if ":" not in host else f"[{host}]"}
        self.allowed_hosts = {f"{name}:{bound}" for name in names} | ({*names} if bound == 80 else set())
        self.allowed_origins = {f"http://{name}" for name in self.allowed_hosts}
        self._publish_start()
        self.worker = threading.Thread(target=self._work, name="astra-play-worker", daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> PlayServer:
        """Serve on background threads (tests, notebooks)."""
        self.worker.start()
        threading.Thread(target=self.httpd.serve_forever, name="astra-play-http", daemon=True).start()
        return self

    def serve_forever(self) -> None:
        self.worker.start()
        try:
            self.httpd.serve_forever()
        finally:
            self.httpd.server_close()

    def shutdown(self) -> None:
        self.steps.put(None)
        self.httpd.shutdown()
        self.httpd.server_close()
        with self.lock:
            for listener in self.listeners:
                listener.put(None)

    # --- frames ------------------------------------------------------------------------------
    def _event(self, frame: torch.Tensor, index: int, step: int, keys: list[str]) -> dict:
        png = base64.b64encode(png_bytes(frame, self.scale)).decode("ascii")
        return {"frame": index, "step": step, "keys": keys, "png": png}

    def _broadcast(self, event: dict) -> None:
        with self.lock:
            self.frames.append(event)
            self.frames_sent += 1
            for listener in self.listeners:
                listener.put(event)

    def _publish_start(self) -> None:
        with self.lock:
            self.frames.clear()
            self.frames_sent = 0
        self._broadcast(self._event(self.session.start, 0, 0, []))

    def _work(self) -> None:
        while True:
            item = self.steps.get()
            if item is None:
                return
            try:
                if item == "reset":
                    with self.lock:
                        self.session.reset()
                    self._publish_start()
                    continue
                record = self.session.step(item)
                for i in range(record.frames.shape[1]):
                    self._broadcast(self._event(record.frames[:, i], record.first_frame + i, record.index, record.keys))
            except Exception as err:  # a failed step is reported to the page; the server goes on
                self.error = f"{type(err).__name__}: {err}"
                with self.lock:
                    for listener in self.listeners:
                        listener.put({"error": self.error})

    def enqueue(self, message: Any) -> dict:
        """Validate one action message {"keys": [...]} or {"reset": true} and queue it."""
        if not isinstance(message, dict):
            raise AstraError('message: expected a JSON object such as {"keys": ["W"]}')
        unknown = set(message) - {"keys", "reset"}
        if unknown:
            raise AstraError(f"message: unknown fields {sorted(unknown)}; send {{'keys': [...]}} or {{'reset': true}}")
        if message.get("reset") is True:
            item: Any = "reset"
        elif "keys" in message:
            item = self.session.parse_keys(message["keys"])
        else:
            raise AstraError('message: needs "keys" (a list of key names) or "reset": true')
        try:
            self.steps.put_nowait(item)
        except queue.Full:
            raise _Busy(f"{MAX_QUEUED_STEPS} steps are already waiting; try again") from None
        return {"queued": item if item == "reset" else {"keys": item}, "waiting": self.steps.qsize()}


class _Busy(AstraError):
    pass


class _BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most `max_connections` connections at once; the next
    one gets 503 and is closed, so a flood of idle or slow connections cannot pile up threads."""

    def __init__(self, address, handler, max_connections: int):
        if ":" in str(address[0]):
            self.address_family = socket.AF_INET6
        self.slots = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            body = b'{"error": "too many open connections; try again"}'
            head = (
                "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            try:
                request.settimeout(1.0)
                request.sendall(head.encode() + body)
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request, client_address):  # a broken client is not the server's failure
        pass


def _handler(server: PlayServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = server.timeout  # socket timeout: a slow or short request is dropped, not waited on forever

        def _refused(self) -> str | None:
            """Why this request may not drive or read the session (DNS rebinding, cross-site posts)."""
            host = self.headers.get("Host", "")
            if host.lower() not in server.allowed_hosts:
                return f"host {host!r} is not served here"
            origin = self.headers.get("Origin")
            if origin is not None and origin.lower() not in server.allowed_origins:
                return f"requests from origin {origin!r} are refused; open the page itself"
            return None

        def send_error(self, code, message=None, explain=None):  # malformed requests: a short JSON reply
            try:
                self.close_connection = True
                self._json(code, {"error": message or HTTPStatus(code).phrase})
            except (OSError, ValueError):
                pass

        def log_message(self, fmt, *args):  # keep the terminal for the user's own output
            pass

        def _reply(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, payload: dict) -> None:
            self._reply(status, json.dumps(payload).encode())

        def do_GET(self):  # noqa: N802 (http.server's naming)
            try:
                refused = self._refused()
                if refused:
                    self._json(HTTPStatus.FORBIDDEN, {"error": refused})
                elif self.path in ("/", "/index.html"):
                    self._reply(HTTPStatus.OK, page(server.session).encode(), "text/html; charset=utf-8")
                elif self.path == "/events":
                    self._events()
                elif self.path == "/state":
                    with server.lock:
                        payload = {
                            "world": server.session.world.name,
                            "frames": server.frames_sent,
                            "trace": server.session.trace_json(),
                            "error": server.error,
                        }
                    self._json(HTTPStatus.OK, payload)
                else:
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"no such page {self.path!r}"})
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.close_connection = True

        def do_POST(self):  # noqa: N802
            try:
                refused = self._refused()
                if refused:
                    self.close_connection = True
                    self._json(HTTPStatus.FORBIDDEN, {"error": refused})
                    return
                if self.path != "/step":
                    self._json(HTTPStatus.NOT_FOUND, {"error": f"POST to /step, not {self.path!r}"})
                    return
                kind = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
                if kind != "application/json":
                    self.close_connection = True
                    self._json(
                        HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                        {"error": f"send the message as application/json, not {kind or 'no content type'!r}"},
                    )
                    return
                length = self.headers.get("Content-Length")
                if length is None:
                    self._json(HTTPStatus.LENGTH_REQUIRED, {"error": "send a Content-Length"})
                    self.close_connection = True
                    return
                if not re.fullmatch(r"[0-9]{1,12}", length.strip()):
                    self._json(HTTPStatus.BAD_REQUEST, {"error": f"Content-Length {length!r} is not a byte count"})
                    self.close_connection = True
                    return
                if int(length) > MAX_MESSAGE_BYTES:
                    self._json(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                        {"error": f"message of {length} bytes; at most {MAX_MESSAGE_BYTES}"},
                    )
                    self.close_connection = True  # the unread body must not be taken for a request
                    return
                body = self.rfile.read(int(length))
                if len(body) < int(length):  # the client closed before sending its whole body
                    self.close_connection = True
                    return
                try:
                    message = json.loads(body.decode("utf-8"))
                except (UnicodeDecodeError, json.JSONDecodeError) as err:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": f"message is not JSON: {err}"})
                    return
                except RecursionError:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": "message is nested too deeply"})
                    return
                try:
                    self._json(HTTPStatus.ACCEPTED, server.enqueue(message))
                except _Busy as err:
                    self._json(HTTPStatus.TOO_MANY_REQUESTS, {"error": str(err)})
                except AstraError as err:
                    self._json(HTTPStatus.BAD_REQUEST, {"error": str(err)})
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                self.close_connection = True

        def _events(self) -> None:
            listener: queue.Queue = queue.Queue()
            with server.lock:
                backlog = list(server.frames)[-1:]  # the newest frame, so the page shows something at once
                server.listeners.append(listener)
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-store")
            self.send_header("Connection", "close")
            self.end_headers()
            self.close_connection = True
            try:
                for event in backlog:
                    self._send_event(event)
                while True:
                    try:
                        event = listener.get(timeout=15)
                    except queue.Empty:
                        self.wfile.write(b": keep-alive\n\n")
                        self.wfile.flush()
                        continue
                    if event is None:
                        return
                    self._send_event(event)
            except (BrokenPipeError, ConnectionResetError, OSError):
                pass
            finally:
                with server.lock:
                    if listener in server.listeners:
                        server.listeners.remove(listener)

        def _send_event(self, event: dict) -> None:
            self.wfile.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            self.wfile.flush()

    return Handler


def page(session: PlaySession) -> str:
    """The single page of the web mode."""
    world = session.world
    buttons = "".join(f'<button data-key="{k}">{k}</button>' for k in session.keys)
    return _PAGE.replace("{{WORLD}}", world.name).replace("{{HELP}}", world.key_help).replace("{{BUTTONS}}", buttons)


_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>astra play: {{WORLD}}</title>
<style>
body { font-family: sans-serif; background: #111; color: #ddd; margin: 2em; }
#frame { image-rendering: pixelated; width: 384px; height: 384px; border: 1px solid #444; display: block; }
button { margin: 2px; min-width: 3.5em; } #status { margin: .5em 0; font-family: monospace; }
</style></head>
<body>
<h2>astra play: {{WORLD}}</h2>
<p>{{HELP}}. Hold keys, or click the buttons (one step per click).</p>
<img id="frame" alt="generated frame" data-frame="-1">
<div id="status">connecting…</div>
<div id="buttons">{{BUTTONS}} <button id="reset">reset</button></div>
<script>
const img = document.getElementById("frame"), status = document.getElementById("status");
const names = {ArrowUp: "UP", ArrowDown: "DOWN", ArrowLeft: "LEFT", ArrowRight: "RIGHT", " ": "SPACE", Shift: "SHIFT"};
const held = new Set();
let last = performance.now(), shown = 0;
function send(message) {
  fetch("/step", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(message)})
    .then(r => r.json()).then(r => { if (r.error) status.textContent = "error: " + r.error; });
}
const events = new EventSource("/events");
events.onmessage = (e) => {
  const m = JSON.parse(e.data);
  if (m.error) { status.textContent = "error: " + m.error; return; }
  img.src = "data:image/png;base64," + m.png;
  img.dataset.frame = m.frame; img.dataset.step = m.step; img.dataset.keys = m.keys.join("+");
  shown += 1; const now = performance.now();
  const keys = m.keys.join("+") || "none", rate = (1000 / (now - last)).toFixed(1);
  status.textContent = `frame ${m.frame} · step ${m.step} · keys ${keys} · ${rate} frames/s`;
  last = now;
};
events.onerror = () => { status.textContent = "disconnected; retrying…"; };
function key(e) {
  const k = names[e.key] || (e.key.length === 1 ? e.key.toUpperCase() : null);
  return k && document.querySelector(`button[data-key="${k}"]`) ? k : null;
}
document.addEventListener("keydown", (e) => {
  const k = key(e); if (!k) return; e.preventDefault();
  held.add(k); send({keys: [...held]});
});
document.addEventListener("keyup", (e) => { const k = key(e); if (k) held.delete(k); });
for (const b of document.querySelectorAll("button[data-key]")) b.onclick = () => send({keys: [b.dataset.key]});
document.getElementById("reset").onclick = () => send({reset: true});
</script></body></html>
"""
