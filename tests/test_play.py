"""`astra play`: the key-driven session, the terminal mode, and the web mode (server robustness and a
headless-Chromium test that presses keys and checks the frames)."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch

from astra_core.apps.cli import main
from astra_core.apps.play import PlayServer, PlaySession, ansi_frame, parse_line
from astra_core.errors import AstraError
from astra_core.plugins import get_registry
from astra_core.world import WorldModel


@pytest.fixture(scope="module")
def model():
    return WorldModel.from_checkpoint(None, guidance_scale=1.0, num_steps=4)


def _session(model, world="keyboard_game"):
    return PlaySession(model, get_registry().get("worlds", world), seed=4)


def test_session_steps_follow_the_world_controls(model):
    session = _session(model)
    state0 = session.state
    step = session.step(["w"])
    assert step.keys == ["W"] and step.frames.shape == (3, model.frames_per_step, 64, 64)
    # The world integrated the key: the player walked forward along its heading.
    heading = np.array([np.sin(state0["yaw"]), 0.0, np.cos(state0["yaw"])])
    moved = session.state["pos"] - state0["pos"]
    assert np.dot(moved, heading) == pytest.approx(0.18 * model.frames_per_step, rel=1e-6)
    session.step(["ArrowLeft", "W"])
    assert session.trace_json()[-1]["keys"] == ["LEFT", "W"]
    assert session.state["yaw"] > state0["yaw"]
    assert session.video().shape[1] == 1 + 2 * model.frames_per_step
    with pytest.raises(AstraError, match="unknown key 'q'"):
        session.step(["q"])
    with pytest.raises(AstraError, match="expected a list"):
        session.step("W")
    session.reset()
    assert session.trace == [] and session.frame_count == 1


def test_every_toy_world_is_playable(model):
    for name in ("free_camera", "car", "tabletop_arm", "keyboard_game"):
        session = _session(model, name)
        before = session.start
        frames = session.step(["W"]).frames
        assert frames.shape[1] == model.frames_per_step
        assert torch.isfinite(frames).all() and not torch.equal(frames[:, -1], before)


def test_terminal_mode_script_and_parsing(model, tmp_path, capsys):
    assert parse_line("w w+left . D") == [["w"], ["w", "left"], [], ["D"]]
    out = tmp_path / "play.mp4"
    code = main(
        ["play", "--embodiment", "car", "--keys", "w w+a .", "--out", str(out), "--steps", "2", "--guidance", "1"]
    )
    assert code == 0
    text = capsys.readouterr().out
    assert "step 2: W+A" in text and "step 3: (none)" in text and out.stat().st_size > 0
    import imageio.v3 as iio

    assert iio.imread(out, index=None).shape[0] == 1 + 3 * model.frames_per_step
    lines = ansi_frame(torch.zeros(3, 4, 4)).split("\n")
    assert len(lines) == 2 and lines[0].count("▀") == 4


def test_ctrl_c_in_the_terminal_mode_still_writes_the_video(model, tmp_path, monkeypatch, capsys):
    from astra_core.apps.play import play_terminal

    session = _session(model, "car")
    step, calls = session.step, []

    def interrupted(keys):
        calls.append(keys)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return step(keys)

    monkeypatch.setattr(session, "step", interrupted)
    out = tmp_path / "play.mp4"
    play_terminal(session, out, preview=False, script="w w w")
    import imageio.v3 as iio

    assert len(calls) == 2 and iio.imread(out, index=None).shape[0] == 1 + model.frames_per_step
    assert "interrupted" in capsys.readouterr().err


@pytest.fixture
def server(model):
    srv = PlayServer(_session(model), port=0, scale=2).start()
    yield srv
    srv.shutdown()


def _post(url, body: bytes, headers=None):
    headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(url + "step", data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def _wait(predicate, timeout=60.0):
    end = time.time() + timeout
    while time.time() < end:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_server_rejects_bad_messages_and_keeps_serving(server):
    url = server.url
    assert _post(url, b"not json")[0] == 400
    status, reply = _post(url, json.dumps({"keys": ["W", "NOPE"]}).encode())
    assert status == 400 and "unknown key 'NOPE'" in reply["error"]
    status, reply = _post(url, json.dumps({"keys": "W"}).encode())
    assert status == 400 and "list" in reply["error"]
    assert _post(url, json.dumps([1, 2]).encode())[0] == 400
    assert _post(url, json.dumps({"jump": 1}).encode())[0] == 400
    assert _post(url, b"\xff\xfe")[0] == 400
    status, reply = _post(url, json.dumps({"keys": ["W"] * 5000}).encode())
    assert status == 413 and "at most" in reply["error"]
    # A raw socket sending garbage must not take the server down either.
    host, port = server.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"\x00\x01GARBAGE\r\n\r\n")
        s.recv(1024)
    status, reply = _post(url, json.dumps({"keys": ["w"]}).encode())
    assert status == 202 and reply["queued"] == {"keys": ["W"]}
    assert _wait(lambda: len(server.frames) >= 1 + server.session.frames_per_step)
    with urllib.request.urlopen(url + "state", timeout=10) as r:
        state = json.loads(r.read())
    assert state["trace"] == [{"step": 1, "keys": ["W"], "first_frame": 1}] and state["error"] is None


def test_events_stream_frames_as_they_are_made(server):
    url = server.url
    with urllib.request.urlopen(url + "events", timeout=30) as stream:
        first = json.loads(stream.readline().decode()[len("data: ") :])
        assert first["frame"] == 0 and first["png"]
        stream.readline()
        assert _post(url, json.dumps({"keys": ["D"]}).encode())[0] == 202
        events = []
        while len(events) < server.session.frames_per_step:
            line = stream.readline().decode()
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: ") :]))
    assert [e["frame"] for e in events] == list(range(1, 1 + server.session.frames_per_step))
    assert all(e["keys"] == ["D"] for e in events)


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _png_array(data_url: str) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))).convert("RGB"))


def test_browser_keys_drive_the_frames(server):
    """Headless Chromium opens the page, presses keys, and sees new frames that follow them."""
    browser, driver_path = _chromium(), shutil.which("chromedriver")
    if browser is None or driver_path is None:
        if os.environ.get("ASTRA_REQUIRE_BROWSER"):
            pytest.fail("ASTRA_REQUIRE_BROWSER is set but chromium/chromedriver are not installed")
        pytest.skip("needs Debian's chromium and chromium-driver (.ci/run installs them)")
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.keys import Keys

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(driver_path), options=options)
    try:
        driver.get(server.url)

        def frame_no():
            return int(driver.find_element("id", "frame").get_attribute("data-frame"))

        assert _wait(lambda: frame_no() == 0, 30), "the start frame never arrived"
        start = _png_array(driver.find_element("id", "frame").get_attribute("src"))
        body = driver.find_element("tag name", "body")
        n = server.session.frames_per_step
        for expected_steps, key in enumerate(("w", "w", Keys.ARROW_LEFT), start=1):
            body.send_keys(key)
            assert _wait(lambda s=expected_steps: frame_no() == s * n, 60), f"no frames after key {key!r}"
        img = driver.find_element("id", "frame")
        assert img.get_attribute("data-keys") == "LEFT"
        latest = _png_array(img.get_attribute("src"))
        assert latest.shape == start.shape and np.abs(latest.astype(int) - start.astype(int)).mean() > 1.0
        assert "keys LEFT" in driver.find_element("id", "status").text
        # The server saw exactly the keys pressed, in order, and moved the world accordingly.
        assert [s["keys"] for s in server.session.trace_json()] == [["W"], ["W"], ["LEFT"]]
        driver.find_element("css selector", 'button[data-key="D"]').click()
        assert _wait(lambda: frame_no() == 4 * n, 60)
        assert server.session.trace_json()[-1]["keys"] == ["D"]
    finally:
        driver.quit()


def test_terminal_mode_reads_single_key_presses_on_a_tty(tmp_path):
    """On a terminal, each key press is one step (arrow keys arrive as escape sequences); q quits."""
    import pty
    import subprocess
    import sys

    leader, follower = pty.openpty()
    out = tmp_path / "tty.mp4"
    cmd = [sys.executable, "-m", "astra_core.apps.cli", "play", "--embodiment", "free_camera", "--steps", "1"]
    proc = subprocess.Popen(cmd + ["--out", str(out)], stdin=follower, stdout=follower, stderr=follower)
    os.close(follower)
    seen = b""

    def read_until(marker: bytes, timeout: float = 120.0) -> None:
        import select

        nonlocal seen
        end = time.time() + timeout
        while marker not in seen and time.time() < end:
            if not select.select([leader], [], [], 0.2)[0]:
                continue  # nothing yet: look at the clock again rather than block
            try:
                seen += os.read(leader, 65536)
            except OSError:
                break
        assert marker in seen, seen[-500:]

    try:
        read_until(b"start")
        os.write(leader, b"w")
        read_until(b"step 1: W")
        os.write(leader, b"\x1b[D")  # the left arrow
        read_until(b"step 2: LEFT")
        os.write(leader, b"q")
        read_until(b"written:")
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(leader)
    assert b"\x1b[38;2;" in seen  # the ANSI colour preview was drawn
    assert out.stat().st_size > 0


def _raw(server, request: bytes, timeout=10.0) -> bytes:
    host, port = server.httpd.server_address[:2]
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(request)
        chunks = []
        while True:
            try:
                data = conn.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def test_server_refuses_foreign_origins_and_hosts(server):
    url = server.url
    port = server.httpd.server_address[1]
    # a page on another site may not drive the session, nor read it through a rebound DNS name
    status, reply = _post(url, b'{"keys": ["W"]}', {"Origin": "http://evil.example"})
    assert status == 403 and "evil.example" in reply["error"]
    assert _post(url, b'{"keys": ["W"]}', {"Host": f"evil.example:{port}"})[0] == 403
    reply = _raw(server, f"GET /state HTTP/1.1\r\nHost: rebind.example:{port}\r\nConnection: close\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 403")
    # a text/plain post (what a cross-site form or fetch without preflight sends) is refused
    status, reply = _post(url, b'{"keys": ["W"]}', {"Content-Type": "text/plain"})
    assert status == 415 and "application/json" in reply["error"]
    # its own page, localhost and requests without Origin (curl, the page's GETs) are served
    assert _post(url, b'{"keys": ["W"]}', {"Origin": f"http://127.0.0.1:{port}"})[0] == 202
    assert _post(url, b'{"keys": ["W"]}', {"Host": f"localhost:{port}"})[0] == 202
    with urllib.request.urlopen(url + "state", timeout=10) as r:
        assert r.status == 200


def test_server_answers_malformed_requests_and_drops_slow_ones(model):
    srv = PlayServer(_session(model), port=0, scale=2, timeout=0.5, max_connections=4).start()
    try:
        port = srv.httpd.server_address[1]
        head = f"POST /step HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
        assert _raw(srv, (head + "Content-Length: -5\r\n\r\n").encode()).startswith(b"HTTP/1.1 400")
        assert _raw(srv, (head + "Content-Length: 12abc\r\n\r\n").encode()).startswith(b"HTTP/1.1 400")
        deep = b"[" * 1500 + b"]" * 1500
        reply = _raw(srv, (head + f"Content-Length: {len(deep)}\r\n\r\n").encode() + deep)
        assert reply.startswith(b"HTTP/1.1 400") and b"nested" in reply
        # a body shorter than its Content-Length: dropped after the timeout, no thread left waiting
        start = time.time()
        _raw(srv, (head + "Content-Length: 100\r\n\r\n{").encode(), timeout=5)
        assert time.time() - start < 4
        # connections beyond the bound get 503 at once; the server goes on afterwards
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
        try:
            assert _raw(srv, f"GET /state HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()).startswith(
                b"HTTP/1.1 503"
            )
        finally:
            for conn in idle:
                conn.close()
        # until the handlers notice the idle connections closed, the server is still at its bound and may
        # close a new one before reading it (a broken pipe here): that is "not yet", not a failure
        assert _wait(lambda: _status_or_none(srv.url, b'{"keys": ["W"]}') == 202, timeout=10)
    finally:
        srv.shutdown()


def _status_or_none(url, body: bytes):
    try:
        return _post(url, body)[0]
    except (urllib.error.URLError, ConnectionError):
        return None


def test_long_sessions_keep_bounded_history(model):
    from astra_core.apps import play

    session = _session(model)
    session.max_trace = 3
    for _ in range(5):
        session.step(["W"])
    assert [s.index for s in session.trace] == [3, 4, 5] and session.steps_taken == 5
    srv = PlayServer(_session(model), port=0)
    try:
        assert srv.session.max_trace == play.KEPT_STEPS and srv.frames.maxlen == play.KEPT_FRAMES
    finally:
        srv.httpd.server_close()


def test_busy_port_is_one_clear_error(model):
    srv = PlayServer(_session(model), port=0)
    try:
        port = srv.httpd.server_address[1]
        with pytest.raises(AstraError, match=f"port {port} on 127.0.0.1 is in use; pass --port 0"):
            PlayServer(_session(model), port=port)
    finally:
        srv.httpd.server_close()


def test_play_without_embodiment_picks_a_world_the_model_drives(tmp_path, capsys):
    """The keyboard game is the default only for a model that drives it: a camera-only model plays the
    free camera (it was refused, naming the keyboard game's modality)."""
    from astra_core.checkpoint import save_checkpoint
    from astra_core.config import ActionConfig, AstraConfig, dit_preset
    from astra_core.data.tokenizer import PixelTokenizer
    from astra_core.model.actions import AstraNet

    cfg = AstraConfig(
        dit=dit_preset("tiny", dim=32, ffn_dim=64, num_heads=2, num_layers=1, in_dim=48, out_dim=48),
        action=ActionConfig(encoder="moae", modalities=("camera_se3",), token_dim=8, expert_hidden=8),
    )
    path = save_checkpoint(tmp_path / "cam.safetensors", AstraNet(cfg), tokenizer=PixelTokenizer(4))
    out = tmp_path / "play.mp4"
    assert main(["play", "--checkpoint", str(path), "--keys", "w .", "--out", str(out), "--steps", "1"]) == 0
    text = capsys.readouterr().out
    assert "free_camera" in text and "step 1: W" in text and out.stat().st_size > 0
    # a model no toy world speaks to (an Atari model) is pointed at --env
    cfg = cfg.model_copy(update={"action": cfg.action.model_copy(update={"modalities": ("atari_action",)})})
    path = save_checkpoint(tmp_path / "atari.safetensors", AstraNet(cfg), tokenizer=PixelTokenizer(4))
    assert main(["play", "--checkpoint", str(path), "--keys", "."]) == 2
    err = capsys.readouterr().err
    assert "['atari_action']" in err and "--env" in err
