"""Non-text content parts: image parts from files and URLs, and references to their bytes for traces.

* :func:`image_part` turns what a user names (a local file, an ``http(s)://`` URL or a ``data:`` URL) into an
  OpenAI ``image_url`` part. A local file becomes a base64 data URL whose MIME type is read from the file's magic
  bytes (PNG, JPEG, GIF, WebP, BMP, TIFF), else guessed from its name (:mod:`mimetypes`); anything that is not
  one of those image types, a missing file, or a URL of another scheme raises a one-line
  :class:`~pacore_graph.errors.ConfigError`. http(s) URLs are passed on as they are: the model server fetches them.
* :func:`media_reference` and :func:`reference_media` replace the bytes of a part (a ``data:`` URL anywhere in a
  non-text part, the base64 ``data`` of ``input_audio``) by a reference: ``{"sha256", "bytes", "mime"}`` (the
  hash and size of the decoded bytes). Traces hold references, never the bytes.
* :func:`thumbnail` makes a small PNG data URL of an image when Pillow is installed (it comes with the ``viz``
  and ``eval`` extras, through matplotlib), for the HTML view of a trace.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import mimetypes
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pacore_graph.errors import ConfigError
from pacore_graph.messages import non_text_parts

__all__ = [
    "IMAGE_MIME_TYPES",
    "THUMBNAIL_MAX_SIDE",
    "data_url",
    "image_part",
    "media_reference",
    "parse_data_url",
    "problem_media",
    "reference_media",
    "sniff_image_type",
    "thumbnail",
]

#: The image types a local file or a data URL may have (what vLLM's image loader, Pillow, reads everywhere).
IMAGE_MIME_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp", "image/bmp", "image/tiff")

#: The longest side of a trace thumbnail, in pixels.
THUMBNAIL_MAX_SIDE = 128

# Six fixed signatures: a dependency for them would weigh more than these lines.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
)

_KINDS = "a PNG, JPEG, GIF, WebP, BMP or TIFF file, an http(s):// URL or a data:image/...;base64, URL"


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type of an image from its first bytes, or None when they are not a known image signature."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for signature, mime in _SIGNATURES:
        if data.startswith(signature):
            return mime
    return None


def data_url(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,<data>``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def parse_data_url(url: str) -> tuple[str, bytes] | None:
    """The MIME type and decoded bytes of a base64 ``data:`` URL; None for anything else (or bad base64)."""
    if not url.startswith("data:"):
        return None
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        return None
    return header.removesuffix(";base64").split(";")[0].strip().lower() or "text/plain", data


def image_part(source: str, *, base: Path | None = None) -> dict[str, Any]:
    """An OpenAI ``image_url`` part for ``source``: a local file (relative to ``base``), an http(s) or data URL.

    Raises :class:`ConfigError` (one line, naming ``source``) for a missing or unreadable file, a type that is not
    one of :data:`IMAGE_MIME_TYPES`, a URL of another scheme, or a data URL that is not a base64 image.
    """
    path = Path(source) if base is None else base / source
    scheme = urlsplit(source).scheme.lower()
    if scheme in ("http", "https"):
        return {"type": "image_url", "image_url": {"url": source}}
    if scheme == "data":
        parsed = parse_data_url(source)
        if parsed is None or parsed[0] not in IMAGE_MIME_TYPES:
            raise ConfigError(f"image {_short(source)}: not a base64 image data URL; give {_KINDS}")
        return {"type": "image_url", "image_url": {"url": source}}
    if len(scheme) > 1 and not path.exists():  # "ftp://...", "file:///...": not a file name (C: is a drive)
        raise ConfigError(f"image {_short(source)}: {scheme}: URLs are not accepted; give {_KINDS}")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"image {source}: no such file; give {_KINDS}") from None
    except OSError as exc:
        raise ConfigError(f"image {source}: cannot be read ({exc.strerror or exc}); give {_KINDS}") from None
    mime = sniff_image_type(data) or mimetypes.guess_type(path.name)[0]
    if mime not in IMAGE_MIME_TYPES:
        raise ConfigError(f"image {source}: unsupported type ({mime or 'unknown'}); give {_KINDS}")
    return {"type": "image_url", "image_url": {"url": data_url(data, mime)}}


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def media_reference(data: bytes, mime: str) -> dict[str, Any]:
    """The reference a trace keeps instead of ``data``: its sha256 (hex), its size in bytes and its MIME type."""
    return {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "mime": mime}


def reference_media(messages: Any, cache: dict[str, dict[str, Any]] | None = None) -> Any:
    """A copy of chat ``messages`` whose non-text parts hold references (:func:`media_reference`) for their bytes.

    Every base64 ``data:`` URL inside a non-text part, and ``input_audio.data``, is replaced; text and http(s)
    URLs are kept. Anything that is not a list of messages is returned as it is. ``cache`` maps each replaced
    string to its reference, so the same image in many requests is decoded and hashed once.
    """
    if not isinstance(messages, list):
        return messages
    seen: dict[str, dict[str, Any]] = {} if cache is None else cache
    copied: list[Any] = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list) or not non_text_parts(content):
            copied.append(message)
            continue
        parts = [
            part if isinstance(part, Mapping) and part.get("type", "text") == "text" else _referenced(part, seen)
            for part in content
        ]
        copied.append({**message, "content": parts})
    return copied


def _referenced(value: Any, seen: dict[str, dict[str, Any]], audio_format: str | None = None) -> Any:
    """``value`` with every base64 data URL (and ``input_audio.data``) replaced by its reference."""
    if isinstance(value, Mapping):
        if audio_format is not None and isinstance(value.get("data"), str):  # input_audio: bare base64
            mime = f"audio/{value.get('format') or audio_format}"
            return {**value, "data": _reference_of(value["data"], seen, bare_mime=mime)}
        return {key: _referenced(item, seen, "wav" if key == "input_audio" else None) for key, item in value.items()}
    if isinstance(value, list):
        return [_referenced(item, seen) for item in value]
    if isinstance(value, str) and value.startswith("data:"):
        return _reference_of(value, seen)
    return value


def _reference_of(text: str, seen: dict[str, dict[str, Any]], bare_mime: str | None = None) -> Any:
    found = seen.get(text)
    if found is not None:
        return found
    if bare_mime is not None:
        try:
            parsed: tuple[str, bytes] | None = (bare_mime, base64.b64decode(text, validate=True))
        except (binascii.Error, ValueError):
            parsed = None
    else:
        parsed = parse_data_url(text)
    if parsed is None:
        # Not base64 (a plain data: URL with inline text): its reference is of the text itself.
        parsed = ("text/plain", text.encode("utf-8"))
    reference = seen[text] = media_reference(parsed[1], parsed[0])
    return reference


def problem_media(messages: Sequence[Any]) -> list[tuple[str, str | None, bytes | None, str | None]]:
    """Each non-text part of ``messages`` as (part type, MIME type, decoded bytes, URL): bytes for data URLs, the
    URL for others (None where unknown)."""
    found: list[tuple[str, str | None, bytes | None, str | None]] = []
    for message in messages:
        content = message.get("content") if isinstance(message, Mapping) else None
        for part in non_text_parts(content):
            kind = str(part.get("type", "?")) if isinstance(part, Mapping) else "?"
            audio = part.get("input_audio") if isinstance(part, Mapping) else None
            if isinstance(audio, Mapping) and isinstance(audio.get("data"), str):
                try:
                    found.append((kind, f"audio/{audio.get('format') or 'wav'}", base64.b64decode(audio["data"]), None))
                    continue
                except (binascii.Error, ValueError):
                    pass
            url = _first_url(part)
            parsed = parse_data_url(url) if url is not None else None
            if parsed is not None:
                found.append((kind, parsed[0], parsed[1], None))
            else:
                found.append((kind, None, None, url))
    return found


def _first_url(value: Any) -> str | None:
    """The first ``url`` (or data URL) string inside a part."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "url" and isinstance(item, str):
                return item
            found = _first_url(item)
            if found is not None:
                return found
    elif isinstance(value, str) and value.startswith("data:"):
        return value
    return None


def thumbnail(data: bytes, max_side: int = THUMBNAIL_MAX_SIDE) -> str | None:
    """A PNG data URL of the image ``data`` scaled to fit ``max_side`` pixels; None without Pillow, or when the
    bytes are not an image Pillow can read (or would be a decompression bomb)."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.draft("RGB", (max_side, max_side))  # JPEG: decode at a reduced size, fast
                small = image.convert("RGBA")
                small.thumbnail((max_side, max_side))
                out = io.BytesIO()
                small.save(out, format="PNG", optimize=True)
    except (OSError, ValueError, Image.DecompressionBombWarning, Image.DecompressionBombError):
        return None
    return data_url(out.getvalue(), "image/png")
