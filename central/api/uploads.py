"""Uploaded files stream straight to a named file on disk, never whole into memory.

Werkzeug spools each multipart file part into the stream this request class returns; a named
temporary file in the configured upload folder lets the parsers (h5py needs a path) read it in
place, and it is deleted when the request closes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import IO

from flask import Request, current_app, request
from werkzeug.datastructures import FileStorage
from werkzeug.exceptions import RequestEntityTooLarge

from central.api.errors import ApiError

UPLOAD_DIR_KEY = "BRM_RESEARCH_UPLOAD_DIR"


class DiskUploadRequest(Request):
    def _get_file_stream(
        self,
        total_content_length: int | None,
        content_type: str | None,
        filename: str | None = None,
        content_length: int | None = None,
    ) -> IO[bytes]:
        folder = current_app.config.get(UPLOAD_DIR_KEY)
        if folder is not None:
            Path(folder).mkdir(parents=True, exist_ok=True)
        return tempfile.NamedTemporaryFile("w+b", dir=folder, prefix="upload-", suffix=".part")


def uploaded_file(field: str, max_bytes: int) -> tuple[Path, str]:
    """The path of the request's file part ``field`` and its client-side name (no folders).

    The request may be at most ``max_bytes`` (413 beyond, counted while it streams in, so a
    client that lies about or omits Content-Length is stopped too); no such part is a 422.
    """
    request.max_content_length = max_bytes
    try:
        upload: FileStorage | None = request.files.get(field)
    except RequestEntityTooLarge as exc:
        limit = f"{max_bytes / 1024**2:g} MB"
        detail = {"field": field, "issue": f"File exceeds the maximum upload size of {limit}"}
        raise ApiError(413, f"File too large (maximum {limit})", [detail]) from exc
    if upload is None:
        msg = "Field required (a multipart/form-data file part)"
        detail = {"loc": ["form", field], "field": field, "msg": msg, "type": "missing"}
        raise ApiError(422, f"{field}: {msg}", [detail])
    upload.stream.flush()
    name = (upload.filename or "upload.mat").replace("\\", "/").rsplit("/", 1)[-1]
    return Path(upload.stream.name), name[:255] or "upload.mat"
