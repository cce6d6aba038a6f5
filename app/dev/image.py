"""The release image, built from app/Dockerfile with podman and run the way Cloud Run runs it.

Read-only root filesystem with a tmpfs on /tmp only, the image's non-root user, only the contract's env with PORT
set by the runner, on the host network against the backing services of `dev/backing.py`. Registry images cannot
be pulled everywhere, so the base is a stand-in of the same Debian release built from Debian's packages with
debootstrap, cached in podman's store and in .cache/ of this checkout. `bin/run-local --image` (app/dev/run.py)
runs `main`, which builds it, runs `alle migrate` as a job, then web and worker until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import backing

APP = Path(__file__).resolve().parent.parent
ROOT = APP.parent
#: Where `bin/run-local --image` keeps its data: the same directory as `bin/run-local`'s.
DATA_DIR = ROOT / ".local"
CACHE = ROOT / ".cache" / "image"

#: How the Pulumi program builds the release (components/image.py); tests/test_image_build.py checks they agree.
CONTEXT = "app"
DOCKERFILE = "app/Dockerfile"
PLATFORM = "linux/amd64"
TARGET = "release"
TAG = "localhost/alle:local"

#: The stand-in base: the Debian release and Python of the official base image named in app/Dockerfile.
SUITE = "bookworm"
STANDIN_PACKAGES = ("python3", "python3-venv", "ca-certificates")
MIRROR = "http://deb.debian.org/debian"
#: The stand-in (about 170 MB) is larger than python:3.11-slim (about 125 MB); the app's venv is about 155 MB.
SIZE_BUDGET_MB = 400

#: podman's defaults for the OCI runtime, cgroups and ulimits are refused on these machines.
PODMAN = ("podman", "--runtime", "runc", "--cgroup-manager", "cgroupfs")
RUN_FLAGS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1000:1000", "--network", "host")
#: Where the backing services' unix sockets appear inside a container.
SOCKETS = "/run/alle"
#: Cloud Run sends SIGTERM, then SIGKILL 10 s later.
STOP_SECONDS = 10


def missing_tools() -> list[str]:
    return [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]


def podman(*args: str, check: bool = True, capture: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*PODMAN, *args], capture_output=capture, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"podman {args[0]} failed ({result.returncode}): {result.stderr.strip()}")
    return result


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    """One build at a time per checkout (pytest-xdist workers, a developer's second terminal)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def standin() -> str:
    """A base image of Debian's own packages for SUITE, standing in for the official python image."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(STANDIN_PACKAGES)}".encode()).hexdigest()[:12]
    tag = f"localhost/alle-standin:{key}"
    if podman("image", "exists", tag, check=False).returncode == 0:
        return tag
    tarball = CACHE / f"standin-{key}.tar"
    if not tarball.exists():
        print(f"Building the {SUITE} stand-in base with debootstrap (once per checkout, about a minute)…", flush=True)
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            root = Path(tmp) / "root"
            include = ",".join(STANDIN_PACKAGES)
            subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={include}", SUITE, str(root), MIRROR],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            for leftover in [*root.glob("var/cache/apt/archives/*.deb"), *root.glob("var/lib/apt/lists/*_*")]:
                leftover.unlink()
            (root / "usr/bin/python").symlink_to("python3")  # the official image's name for it
            partial = tarball.with_suffix(".partial")
            subprocess.run(["tar", "-C", str(root), "-cf", str(partial), "."], check=True)
            partial.rename(tarball)
    podman("import", "--change", 'CMD ["python3"]', str(tarball), tag)
    return tag


def _ca_bundle() -> Path:
    """This machine's trust store: the network between here and the package index may re-sign TLS."""
    return Path(os.environ.get("SSL_CERT_FILE") or ssl.get_default_verify_paths().openssl_cafile).resolve()


def _context_files() -> Iterator[Path]:
    """Every file and symlink of the build context that .dockerignore lets through, or more: one counted that
    podman does not send costs a rebuild from podman's cache, one left out would leave an image out of date.

    Only the simple forms of .dockerignore are read: a name at the top (`tests`) and one at any depth
    (`**/__pycache__`). A form whose meaning could differ between Go's globs and Python's (`[`, `\\`), a negation
    (`!`, which sends back what an earlier line left out), or a .containerignore (which podman reads instead)
    makes every file count.
    """
    ignore = APP / ".dockerignore"
    if (APP / ".containerignore").exists() or not ignore.exists():
        patterns = []
    else:
        patterns = [line.strip() for line in ignore.read_text().splitlines()]
        patterns = [p for p in patterns if p and not p.startswith("#")]
    if any(p.startswith("!") or "[" in p or "\\" in p for p in patterns):
        patterns = []
    anywhere = [p.removeprefix("**/") for p in patterns if p.startswith("**/") and "/" not in p[3:]]
    top = [p for p in patterns if "/" not in p]
    for path in sorted(APP.rglob("*")):
        parts = path.relative_to(APP).parts
        if (path.is_file() or path.is_symlink()) and not (
            any(fnmatch.fnmatchcase(parts[0], p) for p in top)
            or any(fnmatch.fnmatchcase(part, p) for part in parts for p in anywhere)
        ):
            yield path


def _build_inputs(base_id: str, options: Sequence[str]) -> str:
    """A digest of everything a build reads: the base image, podman build's options (with pip.conf's text), the
    Dockerfile and the context's files, each with its name, its executable bits and its content (a symlink's
    target, not what it points to: podman copies the link). The CA bundle counts by its path only: it lets pip
    reach the index, and the lock's hashes decide what is installed."""
    digest = hashlib.sha256(json.dumps([base_id, *options]).encode())
    for path in [ROOT / DOCKERFILE, *_context_files()]:
        if path.is_symlink():
            mode, content = "link", str(path.readlink()).encode()
        else:
            mode, content = f"{path.stat().st_mode & 0o111:o}", path.read_bytes()
        digest.update(f"{path.relative_to(ROOT)}\0{mode}\0".encode())
        digest.update(hashlib.sha256(content).digest())
    return digest.hexdigest()


def build(base: str | None = None) -> str:
    """Build the release stage on the stand-in (or on `base`) and return the image id.

    The host's CA bundle and a pip.conf naming it are mounted for the build's RUN steps only; no layer keeps them.
    When nothing the build reads has changed since the last one and its image is still in podman's store, that
    image is returned without running podman build: even all from cache, it took about 5.5 s of CPU. A build
    whose inputs changed while it ran (a checkout of another branch, say) leaves no stamp: podman may have read
    either version.
    """
    with _locked():
        base_image = base or standin()
        pip_conf = "[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n"
        (CACHE / "pip.conf").write_text(pip_conf)
        options = [
            "--network=host",
            f"--platform={PLATFORM}",
            f"--target={TARGET}",
            f"--build-arg=BASE={base_image}",
            f"--volume={_ca_bundle()}:/etc/ssl/certs/ca-certificates.crt:ro",
            f"--volume={CACHE / 'pip.conf'}:/etc/pip.conf:ro",
            f"--file={ROOT / DOCKERFILE}",
            f"--tag={TAG}",
        ]

        def inputs_now() -> str | None:
            """None if the base is not in the store yet: podman build pulls it, and nothing can be compared."""
            looked_up = podman("image", "inspect", "--format", "{{.Id}}", base_image, check=False)
            return _build_inputs(looked_up.stdout.strip(), [*options, pip_conf]) if looked_up.returncode == 0 else None

        inputs = inputs_now()
        stamp = CACHE / "built.json"
        with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
            last = json.loads(stamp.read_text())
            if (
                inputs
                and last["inputs"] == inputs
                and podman("image", "exists", last["image"], check=False).returncode == 0
            ):
                podman("tag", last["image"], TAG)
                return str(last["image"])
        stamp.unlink(missing_ok=True)
        iidfile = CACHE / "iid"
        result = podman("build", *options, f"--iidfile={iidfile}", str(ROOT / CONTEXT), check=False)
        if result.returncode != 0:
            raise RuntimeError(f"podman build of {DOCKERFILE} failed:\n{result.stdout[-4000:]}{result.stderr[-4000:]}")
        built = iidfile.read_text().strip()
        if inputs and inputs == inputs_now():
            stamp.write_text(json.dumps({"inputs": inputs, "image": built}))
        return built


def size_mb(image: str) -> float:
    return int(podman("image", "inspect", "--format", "{{.Size}}", image).stdout) / 1e6


@dataclass
class Attachment:
    """The backing services as a container sees them: bind-mounted unix sockets and the host's TCP ports."""

    env: dict[str, str]
    mounts: list[str]


#: On the host's network, web would otherwise listen on every address of this machine.
WEB_ENV = {"WEB_HOST": "127.0.0.1"}


def attach(services: backing.Backing) -> Attachment:
    """Contract env and mounts that point a container at `services`.

    PostgreSQL and Redis listen on unix sockets under private directories; each socket file is mounted on its
    own. The storage emulator is reached over the host network; STORAGE_EMULATOR_HOST is its client's switch.
    """
    postgres_dir = str(services.postgres.get_uri()).split("host=", 1)[1].split("&", 1)[0]
    postgres_socket = next(Path(postgres_dir).glob(".s.PGSQL.*"))
    redis_socket = Path(services.redis.socket_file)
    redis_socket.chmod(0o777)  # the container's user is not root; the socket's directory stays private
    database = services.env["DATABASE_URL"].split("?", 1)[0]
    return Attachment(
        env={
            "DATABASE_URL": f"{database}?host={SOCKETS}",
            "REDIS_URL": f"unix://{SOCKETS}/redis.sock",
            "STORAGE_BUCKET": services.env["STORAGE_BUCKET"],
            "STORAGE_EMULATOR_HOST": services.env["STORAGE_EMULATOR_HOST"],
            "GOOGLE_CLOUD_PROJECT": services.env["GOOGLE_CLOUD_PROJECT"],
        },
        mounts=[f"{postgres_socket}:{SOCKETS}/{postgres_socket.name}", f"{redis_socket}:{SOCKETS}/redis.sock"],
    )


def run_args(
    image: str,
    command: str,
    *,
    name: str,
    env: Mapping[str, str],
    mounts: list[str],
    remove: bool = False,
    detach: bool = False,
) -> list[str]:
    """`podman run` as Cloud Run runs a container: read-only root, tmpfs /tmp only, the image's user."""
    return [
        *PODMAN,
        "run",
        f"--name={name}",
        *(["--rm"] if remove else []),
        *(["--detach"] if detach else []),
        "--read-only",
        "--read-only-tmpfs=false",
        "--tmpfs=/tmp",
        *RUN_FLAGS,
        *(f"--env={key}={value}" for key, value in env.items()),
        *(f"--volume={mount}" for mount in mounts),
        image,
        command,
    ]


def inspect(name: str) -> dict[str, Any]:
    [info] = json.loads(podman("container", "inspect", name).stdout)
    return dict(info)


def cpu_seconds(name: str) -> float:
    """CPU time the container's main process has used so far (user + system), read from the host's /proc."""
    pid = inspect(name)["State"]["Pid"]
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def stop(name: str) -> int:
    """SIGTERM, then SIGKILL after Cloud Run's grace period; returns the container's exit code."""
    podman("stop", f"--time={STOP_SECONDS}", name, check=False)
    return int(inspect(name)["State"]["ExitCode"])


def ready(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/readyz", timeout=1) as response:  # noqa: S310
        return bool(response.status == 200)
    return False


def main() -> int:
    """Run the release from the image on the local backing services: migrate, then web and worker."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import Console

    import backing

    missing = missing_tools()
    if missing:
        print(f"--image needs {', '.join(missing)}: apt-get install podman runc debootstrap.", file=sys.stderr)
        return 1
    lock = backing.claim(DATA_DIR)  # held until this process exits
    if lock is None:
        print(f"{DATA_DIR} is in use by another bin/run-local; stop that one first.", file=sys.stderr)
        return 1
    image = build()
    port = os.environ.get("PORT", "8080")
    services = backing.start(DATA_DIR, persistent=True)
    attached = attach(services)
    mounts = attached.mounts
    env = {
        "APP_ENV": "development",
        "RELEASE": os.environ.get("RELEASE", "local-image"),
        "SECRET_KEY": os.environ.get("SECRET_KEY", backing.DEV_SECRET_KEY),
        **attached.env,
    }
    run_id = uuid.uuid4().hex[:8]
    names = [f"alle-{kind}-{run_id}" for kind in ("migrate", "web", "worker")]
    console = Console()
    children: list[tuple[subprocess.Popen[str], threading.Thread]] = []

    def start(kind: str, name: str, child_env: dict[str, str], remove: bool = False) -> subprocess.Popen[str]:
        """A container in a session of its own (Ctrl-C reaches only this process, which stops it as Cloud Run
        does, with SIGTERM), its output prefixed with its process type, as bin/run-local's is."""
        popen = subprocess.Popen(
            run_args(image, kind, name=name, env=child_env, mounts=mounts, remove=remove),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        assert popen.stdout is not None
        relay = threading.Thread(target=console.copy, args=(kind, popen.stdout), daemon=True)
        relay.start()
        children.append((popen, relay))
        return popen

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a supervisor's SIGTERM stops it like Ctrl-C
    try:
        migrate = start("migrate", names[0], env, remove=True)
        if migrate.wait() != 0:
            console.say("alle migrate failed in the image; see its lines above.")
            return migrate.returncode
        web = start("web", names[1], {**env, **WEB_ENV, "PORT": port})
        worker = start("worker", names[2], env)
        url = f"http://127.0.0.1:{port}"
        while web.poll() is None and worker.poll() is None:
            if url and ready(url):
                tag = image.removeprefix("sha256:")[:12]
                console.say(f"Alle (image {tag}) is serving on {url}  (Ctrl-C stops everything)")
                url = ""
            time.sleep(0.2)
        exited, popen = ("web", web) if web.poll() is not None else ("worker", worker)
        console.say(f"The {exited} container exited with status {popen.returncode}; stopping the rest.")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        for name in names:  # migrate too, if a stop came while it ran
            podman("stop", f"--time={STOP_SECONDS}", name, check=False)
            podman("rm", "--ignore", name, check=False)
        for popen, relay in children:
            popen.wait()
            relay.join()  # its last lines
        services.stop()
