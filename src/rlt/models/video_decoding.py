"""Video decoding for RLT: a file, bytes or ``datasets`` Video row -> sampled RGB frames ``(T, H, W, 3)`` uint8.

The PyAV (default) and torchcodec readers, the frame sampling, and the check of a clip's array layout
(``frames_to_tensor``). Apart from ``video_processing_rlt.py`` because reading a video is its own
concept: containers, codecs, seeking and short or truncated files, all before any pixel is resized;
the processor takes the frames from here and resizes, crops and normalises them, and tools that only
decode (the benchmark, the dataset readers) need nothing else. No transformers imports.

Frame sampling (``num_frames`` frames from a clip of ``n``):

- ``frame_stride=None, fps=None`` (default): uniform over the whole clip, the centre of each of
  ``num_frames`` equal segments (``floor((i + 0.5) * n / num_frames)``);
- ``frame_stride=s``: frames ``start, start + s, ...`` with ``start = 0``;
- ``fps=f``: like a stride of ``video_fps / f`` frames (rounded per frame).

A clip too short for the sampling never raises: with a stride or an fps, indices past the end
repeat the clip's LAST frame; uniform sampling spreads the ``num_frames`` over the frames there are,
so each frame repeats (4 frames sampled to 8: ``0 0 1 1 2 2 3 3``). A truncated file that decodes fewer
frames than its header claims repeats its last decoded frame too. RLT then drops the repeats, so such a
clip keeps fewer tokens than its content would: ``count_padded_frames`` counts the repeated frames, and
``load_frames(..., return_padded_frames=True)`` / ``processor(videos, return_padded_frames=True)``
report them per clip, for tools that must not let padding inflate token statistics silently.

What a ``datasets`` ``Video`` column holds is taken as it is: a ``{"path", "bytes"}`` dict (read with
``Video(decode=False)``; the bytes are decoded when there are any, else the file at the path) or a
torchcodec ``VideoDecoder`` (what ``Video()`` rows are; frames are read through it, sampled the same
way). This file travels into checkpoint folders for ``trust_remote_code``: only single-dot relative
imports, optional dependencies inside ``try``.
"""

from __future__ import annotations

import importlib.util
import io
import math
import os
from collections.abc import Mapping

import numpy as np
import torch

__all__ = [
    "DECODERS",
    "SEEK_GAP_FRAMES",
    "VideoDecodeError",
    "count_padded_frames",
    "decode_video",
    "frames_to_tensor",
    "sample_frame_indices",
]

DECODERS = ("pyav", "torchcodec")
# Seek (to the keyframe before the next sampled frame) rather than decode through a gap of more
# frames than this; below it, decoding straight on is cheaper than a seek and a keyframe restart.
SEEK_GAP_FRAMES = 48


class VideoDecodeError(ValueError):
    """A video file (or buffer) that cannot be opened or decoded; the message names it."""


def _describe(source) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return f"<{len(source)} bytes of video>"
    if isinstance(source, Mapping):  # a datasets Video row: its path names it, else its size
        if source.get("path"):
            return str(source["path"])
        return _describe(source["bytes"]) if source.get("bytes") is not None else "<video row without bytes or path>"
    if _is_torchcodec_decoder(source):
        path = getattr(getattr(source, "metadata", None), "path", None)
        return str(path) if path else "<torchcodec VideoDecoder>"
    name = getattr(source, "name", None)
    return str(name) if isinstance(name, str) else f"<{type(source).__name__}>"


def sample_frame_indices(
    total_frames: int,
    num_frames: int | None,
    *,
    frame_stride: int | None = None,
    fps: float | None = None,
    video_fps: float | None = None,
    pad: bool = True,
) -> np.ndarray:
    """Which frames to take from a clip of ``total_frames``: int64 ``(num_frames,)``, non-decreasing.

    Uniform over the clip by default; ``frame_stride`` or ``fps`` (with the clip's ``video_fps``)
    take frames at a fixed step from frame 0. Indices past the end repeat the last frame; with
    ``pad=False`` they are left out (fewer frames), and ``num_frames=None`` with a ``frame_stride``
    takes every ``frame_stride``-th frame of the clip.
    """
    if num_frames is None and (pad or frame_stride is None):
        raise ValueError("num_frames=None (every frame_stride-th frame to the end) needs a frame_stride and pad=False")
    if num_frames is not None and (not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1):
        raise ValueError(f"num_frames must be a positive integer, got {num_frames!r}")
    if total_frames < 1:
        raise ValueError("the video has no frames")
    if frame_stride is not None and fps is not None:
        raise ValueError("frame_stride and fps are exclusive: give one of them")
    if frame_stride is not None:
        if not isinstance(frame_stride, int) or isinstance(frame_stride, bool) or frame_stride < 1:
            raise ValueError(f"frame_stride must be a positive integer, got {frame_stride!r}")
        within = -(-total_frames // frame_stride)  # the stride's frames inside the clip
        count = num_frames if pad else min(num_frames or within, within)
        indices = np.arange(count, dtype=np.int64) * frame_stride
    elif fps is not None:
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        if not video_fps or video_fps <= 0:
            raise ValueError("sampling at a target fps needs the video's frame rate, which is unknown")
        indices = np.floor(np.arange(num_frames) * (video_fps / fps) + 1e-6).astype(np.int64)
    else:
        indices = np.floor((np.arange(num_frames) + 0.5) * total_frames / num_frames).astype(np.int64)
    return np.minimum(indices, total_frames - 1) if pad else indices[indices < total_frames]


def count_padded_frames(source_indices) -> int:
    """Sampled frames that repeat the frame before them: ``len(indices) - len(set(indices))``.

    ``source_indices`` are the (non-decreasing) clip frames each sampled frame was taken from. A
    repeat means the clip had fewer (decodable) frames, or a lower frame rate, than the sampling
    needs; 0 for a clip long enough.
    """
    indices = np.asarray(source_indices).reshape(-1)
    return int(indices.size - np.unique(indices).size)


# ----------------------------------------------------------------------------------------------
# Decoding


def _video_of_row(row: Mapping):
    """What to decode of a ``datasets`` ``Video`` row ``{"path", "bytes"}``: the bytes when there are any,
    else the path."""
    if "bytes" not in row and "path" not in row:
        raise TypeError(
            f"cannot read a video from a dict with keys {sorted(row)}: expected {{'path': ..., 'bytes': ...}}, "
            "what a datasets Video(decode=False) column holds"
        )
    data, path = row.get("bytes"), row.get("path")
    if data is not None and (len(data) > 0 or not path):
        return data
    if path:
        return path
    raise VideoDecodeError("cannot read a video row that holds neither bytes nor a path")


def _is_torchcodec_decoder(source) -> bool:
    """A torchcodec ``VideoDecoder`` (what ``datasets``' ``Video()`` rows are), told by its class, not by import."""
    return type(source).__module__.split(".")[0] == "torchcodec" and hasattr(source, "get_frames_at")


def _open_source(source):
    """A path string, or a seekable file object, for PyAV / torchcodec; clear errors for bad input."""
    if isinstance(source, Mapping):
        source = _video_of_row(source)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if path.startswith(("http://", "https://")):
            raise VideoDecodeError(f"cannot read {path}: URLs are not supported, download the video first")
        if not os.path.exists(path):
            raise FileNotFoundError(f"video file not found: {path}")
        if os.path.isdir(path):
            raise VideoDecodeError(f"{path} is a folder, not a video file")
        if not os.access(path, os.R_OK):
            raise VideoDecodeError(f"cannot read video file {path}: permission denied")
        if os.path.getsize(path) == 0:
            raise VideoDecodeError(f"cannot decode video {path}: the file is empty")
        return path
    if isinstance(source, (bytes, bytearray, memoryview)):
        if len(source) == 0:
            raise VideoDecodeError("cannot decode video from bytes: the buffer is empty")
        return io.BytesIO(bytes(source))
    if hasattr(source, "read"):
        return source
    raise TypeError(
        f"cannot read a video from {type(source).__name__}: give a path, bytes, a binary file object, a "
        "{'path', 'bytes'} dict or a torchcodec VideoDecoder (what a datasets Video column holds), or a frame array"
    )


def _import_av():
    try:
        import av
    except ImportError as error:
        raise ImportError("decoding video files needs PyAV: pip install av") from error
    return av


def _frame_count(container, stream) -> int:
    """Frames in the stream; PyAV reports 0 for some containers, so derive it or count packets."""
    if stream.frames:
        return int(stream.frames)
    rate = stream.average_rate or stream.guessed_rate
    if rate and stream.duration and stream.time_base:
        return max(1, round(float(stream.duration * stream.time_base * rate)))
    if rate and container.duration:
        return max(1, round(container.duration / 1_000_000 * float(rate)))
    # Unknown: count packets without decoding them, then rewind.
    count = sum(1 for packet in container.demux(stream) if packet.size)
    if count:
        container.seek(0)
    return count


def _decode_pyav(source, name: str, sample) -> tuple[np.ndarray, float | None, np.ndarray]:
    """Decode the frames ``sample(total, fps)`` asks for: ``(T, H, W, 3)`` uint8, the clip's fps, and
    the clip frame each sampled frame really is ``(T,)`` (an estimated frame count can exceed what decodes)."""
    av = _import_av()
    opened = _open_source(source)
    try:
        container = av.open(opened, mode="r")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise VideoDecodeError(f"cannot decode video {name}: {error}") from None
    with container:
        if not container.streams.video:
            raise VideoDecodeError(f"{name} has no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        video_fps = float(rate) if rate else None
        try:
            total = _frame_count(container, stream)
            if total < 1:
                raise VideoDecodeError(f"{name} has a video stream with zero frames")
            indices = sample(total, video_fps)
            frames, positions = _decode_indices(container, stream, indices, video_fps)
        except av.error.FFmpegError as error:
            raise VideoDecodeError(f"cannot decode video {name}: {error}") from None
    if not frames:
        raise VideoDecodeError(f"cannot decode video {name}: no frame could be decoded (zero frames or a corrupt file)")
    # A frame count that was an estimate can exceed what the stream holds: such indices repeat
    # the last decoded frame (and an index before the first decoded frame takes that one).
    decoded = sorted(frames)
    picked, sources = [], []
    for index in indices:
        index = int(index)
        below = [k for k in decoded if k <= index]
        key = below[-1] if below else decoded[0]
        picked.append(frames[key])
        sources.append(positions[key])
    return np.stack(picked), video_fps, np.asarray(sources, dtype=np.int64)


def _decode_indices(
    container, stream, indices: np.ndarray, video_fps: float | None
) -> tuple[dict[int, np.ndarray], dict[int, int]]:
    """Decode the wanted frame indices: ``{index: (H, W, 3) uint8}`` and ``{index: the frame's own index}``.

    Decodes straight on through short gaps and seeks (to the keyframe at or before the next wanted
    frame) over gaps longer than ``SEEK_GAP_FRAMES``, so a few frames from a long clip cost a few
    GOPs, not the whole clip. Frame indices come from timestamps (``pts * time_base * fps``).
    """
    wanted = sorted({int(i) for i in indices})
    time_base = stream.time_base
    start = stream.start_time or 0
    use_pts = bool(video_fps and time_base)
    frames: dict[int, np.ndarray] = {}
    positions: dict[int, int] = {}  # what each wanted index got: they differ where a seek lands past a target
    decoder = None
    position = -1  # index of the last decoded frame
    counter = -1  # frames decoded since the start (used when a frame has no timestamp)
    seeked_for = None
    i = 0
    while i < len(wanted):
        target = wanted[i]
        if use_pts and seeked_for != target and target - position > SEEK_GAP_FRAMES:
            container.seek(start + int(target / video_fps / time_base), stream=stream, backward=True, any_frame=False)
            decoder = container.decode(stream)
            seeked_for = target
        elif decoder is None:
            decoder = container.decode(stream)
        frame = next(decoder, None)
        if frame is None:
            break
        counter += 1
        if use_pts and frame.pts is not None:
            position = round(float((frame.pts - start) * time_base) * video_fps)
        else:
            position = counter
        if position >= target:
            array = frame.to_ndarray(format="rgb24")
            # One frame stands for every wanted index up to its own (a seek can land past a target).
            while i < len(wanted) and wanted[i] <= position:
                frames[wanted[i]] = array
                positions[wanted[i]] = position
                i += 1
    return frames, positions


def _decode_torchcodec(source, name: str, sample) -> tuple[np.ndarray, float | None, np.ndarray]:
    try:
        from torchcodec.decoders import VideoDecoder
    except ImportError as error:
        raise ImportError(
            "decoder='torchcodec' needs torchcodec (and FFmpeg's libraries): pip install torchcodec"
        ) from error
    opened = _open_source(source)
    if hasattr(opened, "read"):
        opened = opened.read()
    try:
        decoder = VideoDecoder(opened, dimension_order="NHWC")
    except Exception as error:  # noqa: BLE001 - torchcodec's error types for a bad video differ by version
        raise VideoDecodeError(f"cannot decode video {name}: {error}") from None
    return _decode_through_decoder(decoder, name, sample)


def _decode_through_decoder(decoder, name: str, sample) -> tuple[np.ndarray, float | None, np.ndarray]:
    """Sampled frames read through a torchcodec ``VideoDecoder`` object: ``(T, H, W, 3)`` uint8, the clip's fps
    and the frame index each sampled frame comes from."""
    if importlib.util.find_spec("torchcodec") is None:
        raise ImportError(
            f"{name} is a torchcodec VideoDecoder, but torchcodec cannot be imported here: install torchcodec "
            "(it needs FFmpeg's libraries), or read the dataset's column with datasets.Video(decode=False) so "
            "that rlt decodes the video bytes with PyAV"
        )
    try:
        metadata = decoder.metadata
        total = int(metadata.num_frames or len(decoder))
        video_fps = float(metadata.average_fps) if metadata.average_fps else None
    except Exception as error:  # noqa: BLE001 - torchcodec's error types for a bad video differ by version
        raise VideoDecodeError(f"cannot decode video {name}: {error}") from None
    if total < 1:
        raise VideoDecodeError(f"{name} has a video stream with zero frames")
    indices = [int(i) for i in sample(total, video_fps)]
    wanted = sorted(set(indices))  # each frame decoded once, in stream order
    try:
        batch = decoder.get_frames_at(indices=wanted)
    except Exception as error:  # noqa: BLE001 - a bad index: RuntimeError (older torchcodec), IndexError (newer)
        raise VideoDecodeError(f"cannot decode video {name}: {error}") from None
    frames = torch.as_tensor(batch.data).cpu()
    if frames.shape[1] in (1, 3) and frames.shape[-1] not in (1, 3):  # the decoder's NCHW order (datasets' default)
        frames = frames.permute(0, 2, 3, 1)
    order = torch.tensor([wanted.index(i) for i in indices])
    return frames[order].numpy(), video_fps, np.asarray(indices, dtype=np.int64)


def decode_video(
    source,
    *,
    num_frames: int | None = 16,
    frame_stride: int | None = None,
    fps: float | None = None,
    decoder: str = "pyav",
    do_sample_frames: bool = True,
    pad: bool = True,
    return_padded_frames: bool = False,
):
    """Decode a video file, bytes, file object or ``datasets`` Video row into sampled RGB frames ``(T, H, W, 3)`` uint8.

    A ``{"path", "bytes"}`` row is decoded from its bytes (else its path) with ``decoder``; a torchcodec
    ``VideoDecoder`` object is read through itself. With ``do_sample_frames=False`` every frame is
    decoded (``T`` = the clip's length); ``pad=False`` stops the sampling at the clip's end (see
    ``sample_frame_indices``). With ``return_padded_frames``, returns ``(frames, padded)``: how
    many sampled frames repeat the one before them because the clip is too short for the sampling
    (``count_padded_frames``).
    """
    if decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS}, got {decoder!r}")
    name = _describe(source)

    def sample(total, video_fps):
        if not do_sample_frames:
            return np.arange(total, dtype=np.int64)
        return sample_frame_indices(total, num_frames, frame_stride=frame_stride, fps=fps, video_fps=video_fps,
                                    pad=pad)

    if _is_torchcodec_decoder(source):
        frames, _, sources = _decode_through_decoder(source, name, sample)
    elif decoder == "torchcodec":
        frames, _, sources = _decode_torchcodec(source, name, sample)
    else:
        frames, _, sources = _decode_pyav(source, name, sample)
    return (frames, count_padded_frames(sources)) if return_padded_frames else frames


# ----------------------------------------------------------------------------------------------
# Arrays


def frames_to_tensor(video, name: str) -> torch.Tensor:
    """A decoded or user-given clip as uint8/float ``(T, C, H, W)`` with 3 channels."""
    if isinstance(video, np.ndarray):
        video = torch.from_numpy(np.ascontiguousarray(video))
    elif not isinstance(video, torch.Tensor):
        raise TypeError(f"cannot make a video of {type(video).__name__}")
    if video.dim() == 3:  # a single frame, or (T, H, W) grey
        raise ValueError(
            f"{name}: a video array must have 4 dimensions (frames, height, width, channels) or "
            f"(frames, channels, height, width), got shape {tuple(video.shape)}"
        )
    if video.dim() != 4:
        raise ValueError(f"{name}: a video array must have 4 dimensions, got shape {tuple(video.shape)}")
    if video.shape[-1] in (1, 3, 4) and video.shape[1] not in (1, 3, 4):
        video = video.permute(0, 3, 1, 2)
    elif video.shape[1] not in (1, 3, 4):
        raise ValueError(
            f"{name}: cannot tell the channel dimension of a video of shape {tuple(video.shape)} "
            "(expected 1, 3 or 4 channels first or last)"
        )
    frames, channels, height, width = video.shape
    if frames == 0:
        raise ValueError(f"{name}: the video has zero frames")
    if height == 0 or width == 0:
        raise ValueError(f"{name}: the video's frames are empty ({height}x{width})")
    if channels == 1:
        video = video.expand(-1, 3, -1, -1)
    elif channels == 4:
        video = video[:, :3]
    return video
