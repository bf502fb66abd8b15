"""Public: the logo uploaded in /editor/settings, at /branding/<hash>.<ext>.

File names carry a hash of the content, so a response can be cached for a year; a new
logo gets a new name. Only names of the exact form `branding.store_logo` writes are
served, so no path can reach outside DATA_DIR/branding/. That folder is a cache of the
database's copy: a machine without the file (another web machine, a wiped disk)
writes it from the database on first request.
"""

from __future__ import annotations

import logging

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse, Response
from sqlmodel import Session

from newsletter import branding, db

log = logging.getLogger(__name__)

router = APIRouter(include_in_schema=False)

CACHE_CONTROL = "public, max-age=31536000, immutable"


@router.get("/branding/{filename}")
def logo_file(filename: str) -> Response:
    match = branding.LOGO_FILE.match(filename)
    if match is None:
        raise HTTPException(status_code=404, detail="There is no such image.")
    media_type = branding.LOGO_TYPES[match.group(1)]
    headers = {"cache-control": CACHE_CONTROL}
    path = branding.logo_dir() / filename
    if not path.is_file():
        with Session(db.get_engine()) as session:
            data = branding.logo_bytes(session=session, filename=filename)
        if data is None:
            raise HTTPException(status_code=404, detail="There is no such image.")
        try:
            path = branding.write_logo_file(filename, data)
        except OSError as exc:  # a read-only disk still serves the logo, from memory
            log.warning("cannot cache logo %s in %s: %s", filename, path.parent, exc)
            return Response(data, media_type=media_type, headers=headers)
    return FileResponse(path, media_type=media_type, headers=headers)
