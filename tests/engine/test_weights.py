"""Finding, downloading and verifying the MobileSAM weights.

Every download goes to an HTTP server on 127.0.0.1 started here; a guard makes any connection
to another address fail the test, and every test runs with its own cache folder and without
proxy variables or ``NAPARI_MOBILESAM_WEIGHTS`` from the environment.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from napari_mobilesam import build_mobile_sam
from napari_mobilesam.engine import weights as W
from napari_mobilesam.engine.weights import WeightsDownloadError

TRUNCATED_BYTES = 1 << 20  # what the "truncated" route sends before hanging up
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


# --- The local server --------------------------------------------------------------------------


@dataclass
class LocalServer:
    """Routes: /mobile_sam.pt (the synthetic checkpoint), /truncated.pt, /wrong.pt, else 404."""

    base: str
    payload: Path
    sha256: str
    size: int
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, route: str = "mobile_sam.pt") -> str:
        return f"{self.base}/{route}"


def _handler(server_state: LocalServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # keep test output clean
            pass

        def do_GET(self) -> None:
            route = self.path.lstrip("/")
            server_state.hits[route] = server_state.hits.get(route, 0) + 1
            try:
                if route == "mobile_sam.pt":
                    self._send(server_state.size, limit=None)
                elif route == "truncated.pt":
                    # Promise the whole file, send 1 MiB, then close: an interrupted transfer.
                    self._send(server_state.size, limit=TRUNCATED_BYTES)
                elif route == "wrong.pt":
                    body = b"definitely not the weights\n" * 100
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                else:
                    self.send_error(404)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (cancel tests): nothing to do

        def _send(self, length: int, limit: int | None) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(length))
            self.end_headers()
            remaining = length if limit is None else limit
            with open(server_state.payload, "rb") as fh:
                while remaining > 0:
                    block = fh.read(min(remaining, 1 << 20))
                    if not block:
                        break
                    self.wfile.write(block)
                    remaining -= len(block)
            self.wfile.flush()
            self.close_connection = True

    return Handler


@pytest.fixture(scope="module")
def local_server(synthetic_checkpoint: Path) -> Iterator[LocalServer]:
    digest = hashlib.sha256(synthetic_checkpoint.read_bytes()).hexdigest()
    state = LocalServer(
        base="",
        payload=synthetic_checkpoint,
        sha256=digest,
        size=synthetic_checkpoint.stat().st_size,
    )
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def server(local_server: LocalServer, monkeypatch: pytest.MonkeyPatch) -> LocalServer:
    """The server, with the module's expected hash and size patched to the synthetic file's."""
    monkeypatch.setattr(W, "WEIGHTS_SHA256", local_server.sha256)
    monkeypatch.setattr(W, "WEIGHTS_SIZE", local_server.size)
    local_server.hits.clear()
    return local_server


def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private cache folder, no proxies, a dead default URL and a loopback-only socket guard."""
    cache = tmp_path / "cache"
    monkeypatch.setenv(W.ENV_CACHE, str(cache))
    monkeypatch.delenv(W.ENV_WEIGHTS, raising=False)
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    # A test that forgot to pass url= must fail here, not reach the real server.
    monkeypatch.setattr(W, "WEIGHTS_URL", f"http://127.0.0.1:{_closed_port()}/mobile_sam.pt")

    foreign: list[object] = []
    real_connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address: object) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if host not in ("127.0.0.1", "::1", "localhost"):
            foreign.append(address)
            raise OSError(f"test guard: connection to {address!r} refused")
        real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    yield cache
    assert not foreign, f"tests tried to reach {foreign}"


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


# --- Download ----------------------------------------------------------------------------------


def test_download_with_progress_hook_then_cache_hit(server: LocalServer, isolated: Path) -> None:
    calls: list[tuple[int, int]] = []
    path = W.resolve_weights(
        url=server.url(),
        sha256=server.sha256,
        size=server.size,
        progressbar=lambda done, total: calls.append((done, total)),
    )
    assert path == isolated / "mobile_sam.pt"
    assert _leftovers(isolated) == ["mobile_sam.pt"]  # no temporary file left
    assert W.file_sha256(path) == server.sha256

    done = [d for d, _ in calls]
    assert calls[0] == (0, server.size)
    assert done == sorted(set(done)), "byte counts must strictly increase"
    assert calls[-1] == (server.size, server.size)
    assert {t for _, t in calls} == {server.size}
    assert len(calls) > 10  # chunked updates, not just start and end

    # Second time: a verified cache hit, no request.
    source = W.describe_resolution(url=server.url())
    assert (source.kind, source.path) == ("cache", path)
    assert W.resolve_weights(url=server.url(), progressbar=False) == path
    assert server.hits == {"mobile_sam.pt": 1}

    model = build_mobile_sam(path, device="cpu")
    ref = torch.load(server.payload, map_location="cpu", weights_only=True)
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(model.state_dict()[key], ref[key])


def test_truncated_transfer_leaves_nothing(server: LocalServer, isolated: Path) -> None:
    with pytest.raises(WeightsDownloadError, match="interrupted") as info:
        W.resolve_weights(url=server.url("truncated.pt"), progressbar=False)
    assert server.url("truncated.pt") in str(info.value)
    assert _leftovers(isolated) == []  # neither mobile_sam.pt nor a temporary file


def test_wrong_hash_is_rejected_and_nothing_cached(server: LocalServer, isolated: Path) -> None:
    with pytest.raises(WeightsDownloadError, match="expected sha256") as info:
        W.resolve_weights(url=server.url("wrong.pt"), progressbar=False)
    assert server.sha256 in str(info.value)
    assert _leftovers(isolated) == []


def test_http_error(server: LocalServer, isolated: Path) -> None:
    with pytest.raises(WeightsDownloadError, match="HTTP 404"):
        W.resolve_weights(url=server.url("gone.pt"), progressbar=False)
    assert _leftovers(isolated) == []


def test_server_down_message_says_what_to_do(server: LocalServer, isolated: Path) -> None:
    url = f"http://127.0.0.1:{_closed_port()}/mobile_sam.pt"
    with pytest.raises(WeightsDownloadError, match="could not connect") as info:
        W.resolve_weights(url=url, progressbar=False)
    message = str(info.value)
    for needed in (url, server.sha256, str(isolated / "mobile_sam.pt"), W.ENV_WEIGHTS):
        assert needed in message
    assert (info.value.url, info.value.sha256) == (url, server.sha256)
    assert info.value.target == isolated / "mobile_sam.pt"
    assert not (isolated / "mobile_sam.pt").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="other OSes may bypass proxies for loopback")
def test_unreachable_proxy(
    server: LocalServer, isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_PROXY")
    monkeypatch.delenv("no_proxy")
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(WeightsDownloadError, match="proxy"):
        W.resolve_weights(url=server.url(), progressbar=False)
    assert server.hits == {}
    assert _leftovers(isolated) == []


def test_hook_exception_cancels_cleanly(server: LocalServer, isolated: Path) -> None:
    class Cancelled(Exception):
        pass

    def hook(done: int, total: int) -> None:
        if done > 0:
            raise Cancelled

    with pytest.raises(Cancelled):
        W.resolve_weights(url=server.url(), progressbar=hook)
    assert _leftovers(isolated) == []


def test_unwritable_cache_folder(server: LocalServer, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(WeightsDownloadError, match=W.ENV_CACHE):
        W.resolve_weights(url=server.url(), cache_folder=blocker / "sub", progressbar=False)
    assert server.hits == {}


# --- A corrupt cached file ---------------------------------------------------------------------


def _corrupt_cache(cache: Path, size: int) -> Path:
    """A cached mobile_sam.pt of the right size but the wrong content (hash check, not size)."""
    cache.mkdir(parents=True, exist_ok=True)
    target = cache / "mobile_sam.pt"
    with open(target, "wb") as fh:
        fh.truncate(size)  # all zero bytes
    return target


def test_corrupt_cache_is_fetched_again(server: LocalServer, isolated: Path) -> None:
    target = _corrupt_cache(isolated, server.size)
    source = W.describe_resolution(url=server.url())
    assert source.kind == "download" and "sha256" in source.reason
    assert W.resolve_weights(url=server.url(), progressbar=False) == target
    assert W.file_sha256(target) == server.sha256
    assert server.hits == {"mobile_sam.pt": 1}
    assert _leftovers(isolated) == ["mobile_sam.pt"]


def test_corrupt_cache_without_download_is_a_clear_error(
    server: LocalServer, isolated: Path
) -> None:
    target = _corrupt_cache(isolated, server.size)
    with pytest.raises(WeightsDownloadError, match="downloading is disabled") as info:
        W.resolve_weights(url=server.url(), download=False)
    assert "sha256" in str(info.value) and str(target) in str(info.value)
    assert server.hits == {}


def test_short_cached_file_is_rejected_by_size(server: LocalServer, isolated: Path) -> None:
    _corrupt_cache(isolated, 1000)
    with pytest.raises(WeightsDownloadError, match="1,000 bytes instead of"):
        W.resolve_weights(url=server.url(), download=False)


def test_no_cache_and_no_download(isolated: Path) -> None:
    url = "http://127.0.0.1:9/mobile_sam.pt"
    with pytest.raises(WeightsDownloadError, match="downloading is disabled") as info:
        W.resolve_weights(url=url, download=False)
    assert url in str(info.value) and str(isolated / "mobile_sam.pt") in str(info.value)


# --- Resolution order --------------------------------------------------------------------------


def test_resolution_order(tmp_path: Path, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = "http://127.0.0.1:9/mobile_sam.pt"  # never contacted: only describe/cache hits below
    explicit = tmp_path / "fine_tuned.pt"
    explicit.write_bytes(b"any content: explicit files are not hash-checked")
    from_env = tmp_path / "from_env.pt"
    from_env.write_bytes(b"also not hash-checked")
    isolated.mkdir()
    cached = isolated / "mobile_sam.pt"
    cached.write_bytes(b"pretend official")
    monkeypatch.setattr(W, "WEIGHTS_SHA256", hashlib.sha256(b"pretend official").hexdigest())
    monkeypatch.setattr(W, "WEIGHTS_SIZE", len(b"pretend official"))
    monkeypatch.setenv(W.ENV_WEIGHTS, str(from_env))

    def check(path: Path | None, kind: str, expected: Path) -> None:
        source = W.describe_resolution(path, url=url)
        assert (source.kind, source.path) == (kind, expected)
        assert W.resolve_weights(path, url=url, download=False) == expected

    check(explicit, "explicit path", explicit)
    check(None, "NAPARI_MOBILESAM_WEIGHTS", from_env)
    monkeypatch.setenv(W.ENV_WEIGHTS, "")  # empty counts as unset
    check(None, "cache", cached)
    cached.unlink()
    source = W.describe_resolution(url=url)
    assert (source.kind, source.path, source.url) == ("download", cached, url)
    assert source.needs_download and "download" in str(source)


def test_cache_folder_defaults_to_the_platform_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    import pooch

    monkeypatch.delenv(W.ENV_CACHE)
    assert W.cache_dir() == Path(pooch.os_cache("napari-mobilesam")).expanduser()
    monkeypatch.setenv(W.ENV_CACHE, "~/elsewhere")
    assert W.cache_dir() == Path.home() / "elsewhere"


def test_missing_explicit_path_is_not_skipped(tmp_path: Path, isolated: Path) -> None:
    missing = tmp_path / "nope.pt"
    with pytest.raises(FileNotFoundError, match="nope.pt does not exist"):
        W.resolve_weights(missing, url="http://127.0.0.1:9/x")
    with pytest.raises(FileNotFoundError, match="is a folder"):
        W.resolve_weights(tmp_path, url="http://127.0.0.1:9/x")


def test_env_var_to_missing_file_is_not_skipped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = tmp_path / "gone.pt"
    monkeypatch.setenv(W.ENV_WEIGHTS, str(missing))
    with pytest.raises(FileNotFoundError, match="NAPARI_MOBILESAM_WEIGHTS") as info:
        W.describe_resolution(url="http://127.0.0.1:9/x")
    assert str(missing) in str(info.value)
