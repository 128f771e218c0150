"""Frames in and out: tensors [3, T, H, W] in [-1, 1] <-> uint8 [T, H, W, 3]; mp4, gif and png writing
(imageio with imageio-ffmpeg and Pillow) through temporary files, and reading a context image or video
resized to the model's resolution."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from astra_core.checkpoint import written_atomically
from astra_core.errors import AstraError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VIDEO_SUFFIXES = {".mp4", ".gif", ".webm", ".mov", ".avi", ".mkv"}


def image_to_uint8(image: np.ndarray, where: str, error: type[AstraError] = AstraError) -> np.ndarray:
    """Decoded pixels as uint8: 8-bit kept, other unsigned integers (16-bit PNGs) scaled from their full
    range, booleans to 0 / 255; any other dtype raises `error` naming `where` (a cast would wrap 16-bit
    values around 256)."""
    if image.dtype == np.uint8:
        return image
    if image.dtype == np.bool_:
        return image.astype(np.uint8) * 255
    if image.dtype.kind == "u":
        top = np.iinfo(image.dtype).max
        return np.round(image.astype(np.float64) * (255.0 / top)).astype(np.uint8)
    raise error(f"{where}: pixels of type {image.dtype}; expected unsigned integers (8 or 16 bits)")


def frames_to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[3, T, H, W] in [-1, 1] -> uint8 [T, H, W, 3]."""
    if frames.ndim != 4 or frames.shape[0] != 3:
        raise AstraError(f"frames: expected [3, T, H, W], got {tuple(frames.shape)}")
    x = ((frames.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(1, 2, 3, 0).cpu().numpy()


def uint8_to_frames(video: np.ndarray) -> torch.Tensor:
    """uint8 [T, H, W, 3] -> [3, T, H, W] in [-1, 1]."""
    return torch.from_numpy(np.ascontiguousarray(video)).permute(3, 0, 1, 2).float() / 127.5 - 1


def side_by_side(left: torch.Tensor, right: torch.Tensor, scale: int = 1, gap: int = 2) -> np.ndarray:
    """Two clips [3, T, H, W] -> uint8 [T, H·scale, 2·W·scale + gap, 3], nearest-neighbour upscaled."""
    a, b = frames_to_uint8(left), frames_to_uint8(right)
    if scale > 1:
        a = a.repeat(scale, axis=1).repeat(scale, axis=2)
        b = b.repeat(scale, axis=1).repeat(scale, axis=2)
    bar = np.full((a.shape[0], a.shape[1], gap, 3), 255, dtype=np.uint8)
    return np.concatenate([a, bar, b], axis=2)


def _write(path: Path, video: np.ndarray, suffix: str, **kwargs) -> Path:
    import imageio.v3 as iio

    with written_atomically(path, suffix) as tmp:  # encoders pick the container from the file name
        iio.imwrite(tmp, video, extension=suffix, **kwargs)
    return Path(path)


def write_mp4(path: str | Path, video: np.ndarray, fps: float = 10.0) -> Path:
    """H.264 mp4 of uint8 frames [T, H, W, 3] (odd sides padded to even sizes for yuv420p)."""
    video = _pad_to(video, 2)
    return _write(
        Path(path),
        video,
        ".mp4",
        plugin="FFMPEG",
        fps=fps,
        codec="libx264",
        macro_block_size=1,
        ffmpeg_params=["-preset", "ultrafast"],  # tiny clips: encoding speed matters more than size
    )


def write_gif(path: str | Path, video: np.ndarray, fps: float = 10.0) -> Path:
    """Looping gif of uint8 frames [T, H, W, 3]."""
    return _write(Path(path), video, ".gif", duration=1000.0 / fps, loop=0)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    return _write(Path(path), image, ".png")


def _pad_to(video: np.ndarray, multiple: int) -> np.ndarray:
    t, h, w, c = video.shape
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        video = np.pad(video, ((0, 0), (0, ph), (0, pw), (0, 0)), mode="edge")
    return video


def read_context(path: str | Path, size: tuple[int, int], max_frames: int | None = None) -> torch.Tensor:
    """An image or a video file -> frames [3, T, H, W] in [-1, 1] at `size` (H, W): each frame is resized
    to cover the size, keeping its aspect ratio, then centre-cropped."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        raise AstraError(f"--context {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES | VIDEO_SUFFIXES:
        raise AstraError(
            f"--context {path}: unknown type {suffix!r}; give an image ({', '.join(sorted(IMAGE_SUFFIXES))}) "
            f"or a video ({', '.join(sorted(VIDEO_SUFFIXES))})"
        )
    try:
        if suffix in IMAGE_SUFFIXES:
            data = np.asarray(iio.imread(path))
        else:  # frame by frame, keeping the last `max_frames`: a long video is never held whole
            kept = collections.deque((np.asarray(f) for f in iio.imiter(path)), maxlen=max_frames)
            data = np.stack(kept) if kept else None
    except Exception as err:  # decoders raise many types; name the file
        raise AstraError(f"--context {path}: cannot decode: {err}") from None
    if data is None:
        raise AstraError(f"--context {path}: the video holds no frames")
    if suffix in IMAGE_SUFFIXES or data.ndim == 3 and suffix not in VIDEO_SUFFIXES:
        data = data[None]
    if data.ndim == 3:  # grey video [T, H, W]
        data = np.repeat(data[..., None], 3, axis=-1)
    if data.ndim != 4 or data.shape[-1] not in (1, 3, 4):
        raise AstraError(f"--context {path}: expected RGB frames, got an array of shape {data.shape}")
    if data.shape[-1] == 1:
        data = np.repeat(data, 3, axis=-1)
    data = data[..., :3]
    if max_frames is not None:
        data = data[-max_frames:]
    frames = uint8_to_frames(image_to_uint8(data, f"--context {path}"))  # [3, T, h, w]
    return resize_crop(frames, size)


def resize_letterbox(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[3, T, h, w] -> [3, T, H, W]: scale to fit inside (H, W) keeping the aspect ratio, centre, and pad
    with black; nothing of the picture is lost."""
    h, w = frames.shape[-2:]
    th, tw = size
    scale = min(th / h, tw / w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    x = frames.permute(1, 0, 2, 3)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    out = torch.full((x.shape[0], 3, th, tw), -1.0, dtype=x.dtype)
    top, left = (th - nh) // 2, (tw - nw) // 2
    out[:, :, top : top + nh, left : left + nw] = x
    return out.permute(1, 0, 2, 3).clamp(-1, 1).contiguous()


def resize_crop(frames: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """[3, T, h, w] -> [3, T, H, W]: scale to cover (H, W) keeping the aspect ratio, then centre-crop."""
    h, w = frames.shape[-2:]
    th, tw = size
    scale = max(th / h, tw / w)
    nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
    x = frames.permute(1, 0, 2, 3)
    if (nh, nw) != (h, w):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
    top, left = (nh - th) // 2, (nw - tw) // 2
    return x[:, :, top : top + th, left : left + tw].permute(1, 0, 2, 3).clamp(-1, 1).contiguous()
