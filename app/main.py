"""The ``loev`` console script: no arguments opens the desktop app, anything else is the
engine's command line (docs/DESIGN.md section 6). Lives in app/ because app -> engine is the
only direction imports may go."""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    # The window's embedding process is started with multiprocessing's "spawn": in a
    # PyInstaller bundle that child is this executable again, which must turn into the
    # child here, before any argument parsing (a no-op when not frozen).
    import multiprocessing

    multiprocessing.freeze_support()
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv == ["--smoke-test"]:
        from app.window import run_app

        return run_app(argv)
    from engine.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
