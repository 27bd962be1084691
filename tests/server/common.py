"""Shared pieces of the server tests: start `krasis serve` on a free loopback port, wait for /health,
always stop it (SIGTERM, then SIGKILL), and a tiny check counter like tests/test.h's."""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODEL = os.path.join(ROOT, "models", "tiny-moe")
SANITIZED = os.environ.get("KRASIS_SANITIZED") == "1"

checks = 0
failures = 0


def check(cond, what):
    global checks, failures
    checks += 1
    if not cond:
        failures += 1
        print(f"  check failed: {what}", file=sys.stderr, flush=True)
    return cond


def summary(name):
    print(f"{name}: {checks} checks, {failures} failed", flush=True)
    return 1 if failures else 0


class Server:
    """`krasis serve` on 127.0.0.1 with --port 0; the port is read from its 'listening on' line."""

    def __init__(self, krasis, *args):
        self.log = tempfile.NamedTemporaryFile(prefix="krasis-serve-", suffix=".log", delete=False)
        self.proc = subprocess.Popen([krasis, "serve", "-m", MODEL, "--host", "127.0.0.1", "--port", "0", *args],
                                     stdout=self.log, stderr=self.log)
        deadline = time.time() + 60
        self.port = None
        while time.time() < deadline and self.port is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"krasis serve exited with {self.proc.returncode}: {self.text()}")
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)", self.text())
            if m:
                self.port = int(m.group(1))
            else:
                time.sleep(0.02)
        if self.port is None:
            self.kill()
            raise RuntimeError("krasis serve did not start: " + self.text())
        while self.raw("GET", "/health")[0] != 200:
            time.sleep(0.02)
        self.base = f"http://127.0.0.1:{self.port}/v1"

    def text(self):
        with open(self.log.name, errors="replace") as f:
            return f.read()

    def raw(self, method, path, body=None, headers=None, timeout=30):
        """(status, headers, body bytes) of one request on a fresh connection."""
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            if isinstance(body, (dict, list)):
                body = json.dumps(body)
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        except (ConnectionError, OSError):
            return 0, {}, b""
        finally:
            c.close()

    def rss_kib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def metric(self, name):
        status, _, body = self.raw("GET", "/metrics")
        for line in body.decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
        return None

    def stop(self):
        """SIGTERM and the exit status (0 is a clean shutdown; under ASan a leak makes it 99)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        rc = self.proc.returncode
        log = self.text()
        check(rc == 0, f"the server exits cleanly on SIGTERM (status {rc}); its log:\n{log[-3000:]}")
        check("AddressSanitizer" not in log and "runtime error" not in log, "no sanitizer report: " + log[-3000:])
        os.unlink(self.log.name)
        return rc

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
