"""Video and image IO: round trips through mp4/gif, context reading, and its errors."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from astra_core.data.video import frames_to_uint8, read_context, resize_crop, side_by_side, write_gif, write_mp4
from astra_core.errors import AstraError


def test_frames_round_trip_and_side_by_side():
    frames = torch.rand(3, 4, 8, 10) * 2 - 1
    video = frames_to_uint8(frames)
    assert video.shape == (4, 8, 10, 3) and video.dtype == np.uint8
    both = side_by_side(frames, -frames, scale=2, gap=2)
    assert both.shape == (4, 16, 42, 3)
    np.testing.assert_array_equal(both[:, ::2, :20:2], video)
    with pytest.raises(AstraError, match="expected \\[3, T, H, W\\]"):
        frames_to_uint8(torch.zeros(4, 2, 2))


def test_mp4_and_gif_are_written_whole(tmp_path):
    video = (np.random.default_rng(0).random((6, 33, 47, 3)) * 255).astype(np.uint8)  # odd sides
    mp4 = write_mp4(tmp_path / "a.mp4", video, fps=8)
    gif = write_gif(tmp_path / "a.gif", video, fps=8)
    assert iio.imread(mp4, index=None).shape[0] == 6
    np.testing.assert_array_equal(iio.imread(gif, index=None)[..., :3].shape, (6, 33, 47, 3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gif", "a.mp4"]  # no temporary files left


def test_read_context_resizes_and_crops(tmp_path, monkeypatch):
    img = np.zeros((40, 80, 3), dtype=np.uint8)
    img[:, 20:60] = 255  # the centre half is white: after the centre crop the frame is all white
    iio.imwrite(tmp_path / "wide.png", img)
    frames = read_context(tmp_path / "wide.png", (16, 16))
    assert frames.shape == (3, 1, 16, 16) and frames[..., 1:-1].min() > 0.9 and frames.min() > 0.5
    video = np.stack([img // (i + 1) for i in range(5)])  # distinct frames (gif writers merge repeats)
    write_gif(tmp_path / "v.gif", video)
    last_two = read_context(tmp_path / "v.gif", (16, 16), max_frames=2)
    assert last_two.shape == (3, 2, 16, 16)
    assert torch.equal(last_two, read_context(tmp_path / "v.gif", (16, 16))[:, -2:])  # the last frames, in order
    write_mp4(tmp_path / "v.mp4", video, fps=10)

    def whole(*args, **kwargs):
        raise AssertionError("a video is read whole")

    monkeypatch.setattr(iio, "imread", whole)  # read_context imports imageio.v3 when called: the patched module
    assert read_context(tmp_path / "v.mp4", (16, 16), max_frames=1).shape == (3, 1, 16, 16)
    assert resize_crop(torch.zeros(3, 2, 64, 64), (64, 64)).shape == (3, 2, 64, 64)


def test_read_context_errors_name_the_file(tmp_path):
    with pytest.raises(AstraError, match="no such file"):
        read_context(tmp_path / "missing.png", (64, 64))
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(AstraError, match="unknown type '.txt'"):
        read_context(tmp_path / "notes.txt", (64, 64))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(AstraError, match="broken.png: cannot decode"):
        read_context(bad, (64, 64))
