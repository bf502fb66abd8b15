"""Public: the logo uploaded in /editor/settings, at /branding/<hash>.<ext>.

File names carry a hash of the content, so a response can be cached for a year; a new
logo gets a new name. Only names of the exact form `branding.store_logo` writes are
served, so no path can reach outside DATA_DIR/branding/.
"""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

from newsletter import branding

router = APIRouter(include_in_schema=False)

CACHE_CONTROL = "public, max-age=31536000, immutable"


@router.get("/branding/{filename}")
def logo_file(filename: str) -> FileResponse:
    match = branding.LOGO_FILE.match(filename)
    path = branding.logo_dir() / filename
    if match is None or not path.is_file():
        raise HTTPException(status_code=404, detail="There is no such image.")
    return FileResponse(path, media_type=branding.LOGO_TYPES[match.group(1)],
                        headers={"cache-control": CACHE_CONTROL})
