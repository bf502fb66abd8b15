"""The `newsletter` console script: the CLI, with configuration errors said plainly.

Settings are read when the package is imported, so a bad environment variable
(`SMTP_PORT=abc`, the default SECRET_KEY in production) must be caught here, before
the CLI modules load, or the user gets a pydantic traceback instead of a sentence.
"""

from __future__ import annotations

import sys

from pydantic import ValidationError


def main() -> None:
    try:
        from newsletter.cli import app
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p)
            name = where.upper() if where else "settings"
            lines.append(f"  {name}: {error.get('msg', '')}".rstrip())
        print("error: the configuration is not valid:\n" + "\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
    app()


if __name__ == "__main__":
    main()
