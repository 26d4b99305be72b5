"""A real nginx running the shipped site (deploy/nginx/chat.conf) in front of test gateways.

`render_site()` turns the shipped file into the test's: the example values (gateway
addresses, ports 80 and 443, certificate, static and log paths) become the test's own,
every other line stays as shipped. `NginxProxy` runs Debian's nginx on it with a pid
file, logs and temp dirs of its own under a test directory, on free loopback ports, with
a throwaway certificate for 127.0.0.1, and stops it (and its workers) whatever happens.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from bench.harness import (
    LOCALHOST,
    REPO_ROOT,
    Managed,
    free_port,
    group_members,
    port_accepts,
)

SITE_CONF = REPO_ROOT / "deploy" / "nginx" / "chat.conf"
NGINX = "/usr/sbin/nginx"
# Debian's MIME table, which its nginx.conf includes beside the sites.
MIME_TYPES = Path("/etc/nginx/mime.types")


class RenderError(ValueError):
    """The shipped site no longer has a line the test replaces."""


@dataclass(frozen=True)
class SiteValues:
    """What the test puts in place of the shipped site's example values."""

    gateways: Sequence[str]
    http_port: int
    https_port: int
    certificate: Path
    certificate_key: Path
    static_root: Path
    access_log: Path
    error_log: Path


def _replace(pattern: str, repl: str, text: str, expected: int, what: str) -> str:
    """Replace every match of `pattern` (multiline) in `text`; there must be `expected`."""
    new, count = re.subn(pattern, lambda _m: repl, text, flags=re.MULTILINE)
    if count != expected:
        raise RenderError(f"{SITE_CONF}: expected {expected} {what}, found {count}")
    return new


def render_site(text: str, values: SiteValues) -> str:
    """Return the site `text` with its example values replaced by `values`.

    The upstream keeps the parameters of its first `server` line (max_fails, ...) for every
    test gateway; IPv6 listens are dropped and the IPv4 ones bind loopback only.
    """
    block = re.search(r"^upstream chat_gateways \{\n(.*?)^\}", text, flags=re.M | re.S)
    if block is None:
        raise RenderError(f"{SITE_CONF}: no `upstream chat_gateways` block")
    server_line = r"^(\s*)server \S+( [^;]*)?;\n"
    servers = re.findall(server_line, block.group(1), flags=re.M)
    if not servers:
        raise RenderError(f"{SITE_CONF}: no `server` line in the upstream")
    indent, params = servers[0]
    body = re.sub(server_line, "", block.group(1), flags=re.M) + "".join(
        f"{indent}server {address}{params};\n" for address in values.gateways
    )
    text = text[: block.start(1)] + body + text[block.end(1) :]
    text = _replace(r"^\s*listen \[::\]:\d+[^;]*;\n", "", text, 2, "IPv6 `listen` lines")
    text = _replace(
        r"(?<=listen )80;", f"{LOCALHOST}:{values.http_port};", text, 1, "`listen 80;` lines"
    )
    text = _replace(
        r"(?<=listen )443(?= ssl)", f"{LOCALHOST}:{values.https_port}", text, 1, "`listen 443`"
    )
    text = _replace(
        r"(?<=ssl_certificate)(\s+)/\S+;",
        f" {values.certificate};",
        text,
        1,
        "`ssl_certificate` lines",
    )
    text = _replace(
        r"(?<=ssl_certificate_key)(\s+)/\S+;",
        f" {values.certificate_key};",
        text,
        1,
        "`ssl_certificate_key` lines",
    )
    text = _replace(
        r"(?<=alias )/srv/chat/staticfiles/;",
        f"{values.static_root}/;",
        text,
        1,
        "static `alias` lines",
    )
    text = _replace(
        r"(?<=error_log )/var/log/nginx/error\.log(?= crit;)",
        str(values.error_log),
        text,
        1,
        "`error_log` lines",
    )
    return _replace(
        r"(?<=access_log )/var/log/nginx/chat-access\.log(?= chat_noquery;)",
        str(values.access_log),
        text,
        2,
        "`access_log` lines",
    )


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """Write a certificate for 127.0.0.1 (its own CA) and its key; return both paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, LOCALHOST)])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOCALHOST))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path = directory / "cert.pem"
    key_path = directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


# Proxies still running when the interpreter exits (a run killed by its timeout).
_LIVE: dict[int, NginxProxy] = {}


@atexit.register
def _close_leftovers() -> None:
    for proxy in list(_LIVE.values()):
        with contextlib.suppress(Exception):
            proxy.close()


class NginxError(RuntimeError):
    """nginx refused the configuration or did not come up; the message carries its log."""


class NginxProxy(Managed):
    """Debian's nginx on the shipped site, in front of `gateways` (`host:port` each)."""

    def __init__(self, directory: Path, gateways: Sequence[str]) -> None:
        """Prepare (but do not start) nginx with everything it writes under `directory`."""
        self.directory = directory
        self.gateways = list(gateways)
        self.http_port = free_port()
        self.https_port = free_port()
        self.static_root = directory / "static"
        self.access_log = directory / "chat-access.log"
        # Where Debian's nginx.conf sends every server without an access_log of its own
        # (format `combined`, query strings included): the site must leave it empty.
        self.default_access_log = directory / "default-access.log"
        self.error_log = directory / "error.log"
        self.conf_path = directory / "nginx.conf"
        self.site_path = directory / "chat.conf"
        self.pid_path = directory / "nginx.pid"
        self.certificate = directory / "cert.pem"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def https_url(self) -> str:
        """Return the HTTPS base URL (no trailing slash)."""
        return f"https://{LOCALHOST}:{self.https_port}"

    @property
    def http_url(self) -> str:
        """Return the plain-HTTP base URL, which only redirects."""
        return f"http://{LOCALHOST}:{self.http_port}"

    @property
    def wss_url(self) -> str:
        """Return the WebSocket endpoint through nginx."""
        return f"wss://{LOCALHOST}:{self.https_port}/ws/v1/"

    def _write_config(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.static_root.mkdir(exist_ok=True)
        self.certificate, key = self_signed_certificate(self.directory)
        values = SiteValues(
            gateways=self.gateways,
            http_port=self.http_port,
            https_port=self.https_port,
            certificate=self.certificate,
            certificate_key=key,
            static_root=self.static_root,
            access_log=self.access_log,
            error_log=self.error_log,
        )
        self.site_path.write_text(render_site(SITE_CONF.read_text(), values))
        temp = self.directory / "temp"  # nginx makes the dirs inside it, not the parent
        temp.mkdir(exist_ok=True)
        temp_paths = "".join(
            f"    {kind}_temp_path {temp / kind};\n"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root the workers would run as nobody, who cannot enter pytest's temp dirs.
        user = "user root;\n" if os.geteuid() == 0 else ""
        # The part of Debian's /etc/nginx/nginx.conf that matters here, with this
        # directory in place of the system's paths.
        self.conf_path.write_text(
            f"{user}"
            "worker_processes 1;\n"
            f"pid {self.pid_path};\n"
            f"error_log {self.error_log};\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"    include {MIME_TYPES};\n"
            "    default_type application/octet-stream;\n"
            f"    access_log {self.default_access_log};\n"
            f"{temp_paths}"
            f"    include {self.site_path};\n"
            "}\n"
        )

    def _nginx(self, *args: str) -> list[str]:
        return [
            NGINX, "-p", str(self.directory), "-c", str(self.conf_path),
            "-e", str(self.error_log), *args,
        ]  # fmt: skip

    def start(self, timeout: float = 15.0) -> None:
        """Check the configuration (`nginx -t`), start nginx and wait for both ports."""
        if not Path(NGINX).exists():
            raise NginxError(f"{NGINX} is missing: `make {NGINX}` installs it")
        self._write_config()
        checked = subprocess.run(
            self._nginx("-t", "-q"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        if checked.returncode != 0:
            raise NginxError(f"nginx -t refused {self.site_path}:\n{checked.stderr}")
        log = (self.directory / "nginx.out").open("ab")
        with log:
            self._proc = subprocess.Popen(
                self._nginx("-g", "daemon off;"),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                # Its own process group: close() can end the workers even if the master
                # died without taking them along.
                start_new_session=True,
            )
        _LIVE[id(self)] = self
        deadline = time.monotonic() + timeout
        while not (port_accepts(self.https_port) and port_accepts(self.http_port)):
            if self._proc.poll() is not None:
                raise NginxError(f"nginx exited with {self._proc.returncode}:\n{self.output()}")
            if time.monotonic() > deadline:
                raise NginxError(f"nginx did not listen within {timeout} s:\n{self.output()}")
            time.sleep(0.05)

    def output(self) -> str:
        """Return nginx's error log and whatever it printed."""
        parts = []
        for path in (self.error_log, self.directory / "nginx.out"):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    def access_lines(self) -> list[str]:
        """Return the site's access log, one entry per line."""
        try:
            return self.access_log.read_text(errors="replace").splitlines()
        except FileNotFoundError:
            return []

    def close(self) -> None:
        """Stop nginx (fast shutdown, then SIGKILL to its whole group) and reap it."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
            proc.wait()
            for pid in group_members(proc.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        _LIVE.pop(id(self), None)
