"""Run the release locally: embedded backing services, `alle migrate`, then web and worker via the Procfile."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import backing

APP = Path(__file__).resolve().parent.parent


def main() -> int:
    port = os.environ.get("PORT", "8080")
    services = backing.start(APP.parent / ".local", persistent=True)
    env = services.release_env("development", os.environ.get("RELEASE", "local"), PORT=port)
    try:
        migrate = subprocess.run(["alle", "migrate"], env=env, check=False)
        if migrate.returncode != 0:
            print("alle migrate failed; see the log line above.", file=sys.stderr)
            return migrate.returncode
        print(
            f"\n  Alle is starting: open http://127.0.0.1:{port}/ (API /v1, docs /docs; Ctrl-C stops it)\n", flush=True
        )
        return subprocess.run(
            ["honcho", "start", "--port", port, "-f", str(APP / "Procfile")], env=env, check=False
        ).returncode
    except KeyboardInterrupt:
        return 0
    finally:
        services.stop()


if __name__ == "__main__":
    sys.exit(main())
