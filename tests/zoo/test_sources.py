"""Outages: every way a download source can fail, against real servers on 127.0.0.1.

Each failure kind is served by a real socket server (plain TCP with hand-written HTTP, or TLS with a certificate
signed by a CA this test mints with `cryptography`): refused, timeout, TLS with an expired certificate, HTTP 404,
an HTML page instead of the file, a body cut in the middle, a server slow past the timeout, one trickling bytes
forever, wrong bytes. For each: the failing source is named in one line with its reason, the next source
delivers the file, and when every source fails one error lists them all. Only the unresolvable host is
simulated (the resolver is answered in-process, so no DNS server is asked).
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import io
import ipaddress
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from hrpose import zoo
from hrpose.errors import UserError
from hrpose.zoo import download as dl
from hrpose.zoo import sources
from hrpose.zoo.registry import ZooEntry


def _ckpt() -> bytes:
    buf = io.BytesIO()
    torch.save({"state_dict": {"w": torch.arange(40000, dtype=torch.float32)}}, buf)  # ~160 kB
    return buf.getvalue()


CKPT = _ckpt()
SHA = hashlib.sha256(CKPT).hexdigest()
HTML = b"<!DOCTYPE html><html><head><title>Parked</title></head><body>This domain is for sale</body></html>\n"


# ----------------------------------------------------------------------------------------------------
# servers: one accept loop per behaviour, each connection handled in a thread


class Server:
    def __init__(self, handler: Callable[[socket.socket, bytes], None], tls: ssl.SSLContext | None = None) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.handler = handler
        self.tls = tls
        self.requests = 0
        self.stop = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    def url(self, name: str) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/{name}"

    def _loop(self) -> None:
        self.sock.settimeout(0.1)
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn.settimeout(5)
                conn = self.tls.wrap_socket(conn, server_side=True)
            conn.settimeout(10)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            self.requests += 1
            self.handler(conn, head)
        except (OSError, ssl.SSLError):
            pass
        finally:
            try:
                conn.close()
            except OSError:
                pass

    def close(self) -> None:
        self.stop.set()
        self.sock.close()


def _send(conn: socket.socket, status: str, body: bytes, ctype: str = "application/octet-stream",
          length: int | None = None) -> None:  # fmt: skip
    n = len(body) if length is None else length
    conn.sendall(f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n"
                 .encode() + body)  # fmt: skip


def good(conn: socket.socket, head: bytes) -> None:
    _send(conn, "200 OK", CKPT)


def not_found(conn: socket.socket, head: bytes) -> None:
    _send(conn, "404 Not Found", b"no such file", "text/plain")


def html_page(conn: socket.socket, head: bytes) -> None:
    _send(conn, "200 OK", HTML * 30, "text/html")


def cut_mid_body(conn: socket.socket, head: bytes) -> None:
    """Announces the whole file, sends half, hangs up; ignores Range, so a resume gets no further."""
    _send(conn, "200 OK", CKPT[: len(CKPT) // 2], length=len(CKPT))


def silent(conn: socket.socket, head: bytes) -> None:
    """Reads the request, never answers (until the client gives up)."""
    time.sleep(5)


def trickle(conn: socket.socket, head: bytes) -> None:
    """Sends the headers, then one byte every 20 ms: each read succeeds, the file never ends."""
    conn.sendall(f"HTTP/1.1 200 OK\r\nContent-Length: {len(CKPT)}\r\n\r\n".encode())
    for i in range(len(CKPT)):
        conn.sendall(CKPT[i : i + 1])
        time.sleep(0.02)


def wrong_bytes(conn: socket.socket, head: bytes) -> None:
    _send(conn, "200 OK", bytes(reversed(CKPT)))


# ----------------------------------------------------------------------------------------------------
# TLS: a CA this test mints, and leaf certificates for 127.0.0.1 signed by it


def _tls_material(tmp: Path) -> dict[str, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hrpose test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=400)).not_valid_after(now + datetime.timedelta(days=400))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))  # fmt: skip
    out = {"ca": tmp / "ca.pem"}
    out["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    for label, start, end in (("valid", -1, 30), ("expired", -60, -30)):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
                .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now + datetime.timedelta(days=start))
                .not_valid_after(now + datetime.timedelta(days=end))
                .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                .sign(ca_key, hashes.SHA256()))  # fmt: skip
        out[label] = tmp / f"{label}.pem"
        out[label].write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())  # fmt: skip
        )
    return out


def _tls_server(pem: Path) -> Server:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)
    return Server(good, tls=ctx)


# ----------------------------------------------------------------------------------------------------
# fixtures


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    real = socket.create_connection

    def local_only(address, *args, **kwargs):
        assert address[0] in ("127.0.0.1", "localhost"), f"a test tried to reach {address}"
        return real(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", local_only)
    monkeypatch.setenv("HRPOSE_HOME", str(tmp_path / "home"))
    for var in ("HRPOSE_OFFLINE", "HRPOSE_MIRROR", "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY",
                "all_proxy", "ALL_PROXY", "HRPOSE_DOWNLOAD_DEADLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("HRPOSE_DOWNLOAD_TIMEOUT", "1")
    monkeypatch.setattr(dl, "BACKOFF_S", 0.01)
    sources.clear_manifest_cache()


@pytest.fixture()
def servers() -> Iterator[list[Server]]:
    made: list[Server] = []
    yield made
    for s in made:
        s.close()


def _serve(servers: list[Server], handler: Callable[[socket.socket, bytes], None]) -> Server:
    s = Server(handler)
    servers.append(s)
    return s


def _dead_url(name: str) -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def _entry(*urls: str, sha256: str = SHA, size: int = 0) -> ZooEntry:
    return ZooEntry(name="test-model", kind="pose", filename="test-model.pth", urls=tuple(urls), sha256=sha256,
                    layout="official", config=None, channel_order="rgb", archive_member=None, input_size=(192, 256),
                    metric="test", licence="MIT", source="https://example.invalid/tests", size=size)  # fmt: skip


def _failure_lines(err: str) -> list[str]:
    return [ln for ln in err.splitlines() if " failed: " in ln]


# (behaviour, the reason the source must be reported with) -- one row per failure kind of the issue
KINDS: dict[str, tuple[Callable[[socket.socket, bytes], None] | None, str]] = {
    "refused": (None, "connection refused"),
    "http-404": (not_found, "HTTP 404 Not Found"),
    "html": (html_page, "HTML page instead of the file"),
    "cut-mid-body": (cut_mid_body, "short body: connection cut after 8"),
    "slow-past-timeout": (silent, "timed out: no answer within 1 s"),
    "wrong-bytes": (wrong_bytes, f"hash mismatch: expected sha256 {SHA}, got sha256 "
                                 f"{hashlib.sha256(bytes(reversed(CKPT))).hexdigest()}"),
}


def _bad_url(servers: list[Server], kind: str) -> str:
    handler = KINDS[kind][0]
    return _dead_url("bad.pth") if handler is None else _serve(servers, handler).url("bad.pth")


@pytest.mark.parametrize("kind", list(KINDS))
def test_a_failing_source_is_named_and_the_next_one_delivers(kind, servers, capfd):
    bad = _bad_url(servers, kind)
    ok = _serve(servers, good)
    path = zoo.fetch(_entry(bad, ok.url("test-model.pth")), progress=False)
    assert path.read_bytes() == CKPT and ok.requests == 1
    lines = _failure_lines(capfd.readouterr().err)
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"test-model: source 1/2 failed: 127.0.0.1 {bad}: ")
    assert KINDS[kind][1] in lines[0] and lines[0].endswith("trying the next source")


@pytest.mark.parametrize("kind", list(KINDS))
def test_when_every_source_fails_one_error_lists_them_all(kind, servers, capfd):
    bad = _bad_url(servers, kind)
    dead = _dead_url("other.pth")
    with pytest.raises(dl.FetchError) as info:
        zoo.fetch(_entry(bad, dead), progress=False)
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith("could not fetch model 'test-model' from any of its 2 sources: ")
    assert f"[1] 127.0.0.1 {bad}: " in msg and KINDS[kind][1] in msg
    assert f"[2] 127.0.0.1 {dead}: connection refused" in msg
    assert "To place it by hand: get " in msg and str(zoo.hrpose_home() / "pose" / "test-model.pth") in msg
    assert len(_failure_lines(capfd.readouterr().err)) == 2
    left = {p.name for p in (zoo.hrpose_home() / "pose").glob("test-model.pth*")}
    # never a file in place; a cut body's bytes stay in .part, resumed (and re-checked) on the next try
    assert left <= {"test-model.pth.lock", "test-model.pth.part"}, left


def test_a_mirror_trickling_bytes_forever_is_cut_off_by_the_total_time_bound(servers, capfd, monkeypatch):
    monkeypatch.setenv("HRPOSE_DOWNLOAD_DEADLINE", "1.5")
    slow = _serve(servers, trickle)
    ok = _serve(servers, good)
    t0 = time.monotonic()
    assert zoo.fetch(_entry(slow.url("x.pth"), ok.url("x.pth")), progress=False).read_bytes() == CKPT
    assert time.monotonic() - t0 < 6  # each read succeeded (no read timeout): only the total bound stopped it
    (line,) = _failure_lines(capfd.readouterr().err)
    assert "too slow:" in line and "over this source's 1.5 s limit" in line


def test_size_is_checked_where_published(servers, capfd):
    ok = _serve(servers, good)
    e = _entry(ok.url("x.pth"), sha256="", size=len(CKPT) + 1)  # a published size the server's file lacks
    want = rf"size mismatch: {len(CKPT)} bytes, expected {len(CKPT) + 1} \(published size\)"
    with pytest.raises(dl.FetchError, match=want):
        zoo.fetch(e, progress=False)


def test_unresolvable_host_fails_at_once(servers, monkeypatch, capfd):
    """The resolver's answer is simulated (no DNS server is asked): 'not known', then one that hangs."""
    real = socket.getaddrinfo

    def resolver(host, *args, **kwargs):
        if host == "mirror.invalid":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        if host == "hangs.invalid":
            time.sleep(30)
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    ok = _serve(servers, good)
    t0 = time.monotonic()
    e = _entry("https://mirror.invalid/x.pth", "https://hangs.invalid/x.pth", ok.url("x.pth"))
    assert zoo.fetch(e, progress=False).read_bytes() == CKPT
    assert time.monotonic() - t0 < 5  # the hanging resolver is given up after HRPOSE_DOWNLOAD_TIMEOUT (1 s)
    lines = _failure_lines(capfd.readouterr().err)
    assert "name not resolved: mirror.invalid (Name or service not known" in lines[0]
    assert "name not resolved: hangs.invalid did not resolve within 1 s" in lines[1]


def test_tls_expired_certificate_fails_and_the_next_source_is_used(tmp_path, servers, monkeypatch, capfd):
    pem = _tls_material(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(pem["ca"]))  # our CA is trusted: only the expiry can fail
    valid, expired = _tls_server(pem["valid"]), _tls_server(pem["expired"])
    servers += [valid, expired]
    # control: the same CA, a certificate in its validity period, works
    assert zoo.fetch(_entry(valid.url("x.pth")), progress=False).read_bytes() == CKPT
    (zoo.hrpose_home() / "pose" / "test-model.pth").unlink()
    ok = _serve(servers, good)
    assert zoo.fetch(_entry(expired.url("x.pth"), ok.url("x.pth")), progress=False).read_bytes() == CKPT
    (line,) = _failure_lines(capfd.readouterr().err)
    assert line.startswith(f"test-model: source 1/2 failed: 127.0.0.1 {expired.url('x.pth')}: TLS error: ")
    assert "certificate has expired" in line
    # and with no other source: one error with the TLS reason (verification is never turned off)
    (zoo.hrpose_home() / "pose" / "test-model.pth").unlink()
    with pytest.raises(dl.FetchError, match=r"\[1\] 127\.0\.0\.1 https://.*TLS error: certificate has expired"):
        zoo.fetch(_entry(expired.url("x.pth")), progress=False)


def test_tls_unknown_ca_is_refused(tmp_path, servers, capfd):
    pem = _tls_material(tmp_path)  # SSL_CERT_FILE not set: the system store does not know our CA
    valid = _tls_server(pem["valid"])
    servers.append(valid)
    with pytest.raises(dl.FetchError, match="TLS error: (unable to get local issuer|self.signed)"):
        zoo.fetch(_entry(valid.url("x.pth")), progress=False)


# ----------------------------------------------------------------------------------------------------
# detectors: no published hash -> graph structure + trust on first use


def _detector_entry(*urls: str) -> ZooEntry:
    return dataclasses.replace(zoo.get_entry("yolox-tiny-humanart"), name="test-detector", urls=tuple(urls))


def _onnx(path: Path, **kw) -> bytes:
    from helpers import end2end_graph

    end2end_graph(path, **kw)
    return path.read_bytes()


def test_detector_second_source_structure_check_and_trust_on_first_use(tmp_path, servers, capfd):
    import onnx
    from onnx import TensorProto, helper

    graph = _onnx(tmp_path / "a.onnx")
    other = _onnx(tmp_path / "b.onnx", static=True)  # a valid graph too, but other bytes
    assert graph != other
    # a graph of the wrong shape: no 'dets' output
    inp = helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])
    wrong = helper.make_model(helper.make_graph([helper.make_node("Identity", ["input"], ["y"])], "g", [inp], [out]),
                              opset_imports=[helper.make_opsetid("", 13)])  # fmt: skip
    wrong_bytes = wrong.SerializeToString()
    onnx.checker.check_model(wrong)

    def serving(body: bytes) -> Server:
        return _serve(servers, lambda c, h: _send(c, "200 OK", body))

    e = _detector_entry(_dead_url(e_zip := zoo.get_entry("yolox-tiny-humanart").filename),
                        serving(wrong_bytes).url("x.onnx"), serving(HTML).url("y.onnx"), serving(graph).url("z.onnx"))
    assert e_zip.endswith(".zip")
    path = zoo.fetch(e, progress=False)
    assert path.read_bytes() == graph and path == zoo.cache_path(e)
    lines = _failure_lines(capfd.readouterr().err)
    assert "connection refused" in lines[0]
    assert "the graph outputs ['y'] lack 'dets'" in lines[1]
    assert "not an ONNX model" in lines[2] and "HTML page" in lines[2]
    rec = sources.trusted(e)
    assert rec is not None and rec["sha256"] == hashlib.sha256(graph).hexdigest()

    # later fetches must match the first: a source with other (valid) bytes is refused, the next one is used
    path.unlink()
    e2 = _detector_entry(serving(other).url("o.onnx"), serving(graph).url("g.onnx"))
    assert zoo.fetch(e2, progress=False).read_bytes() == graph
    (line,) = _failure_lines(capfd.readouterr().err)
    assert f"differs from {rec['sha256']}, recorded on the first verified fetch" in line
    # and a cached file changed afterwards is refused too
    path.write_bytes(other)
    with pytest.raises(UserError, match="trust.json"):
        zoo.cached_path(e2)


def test_no_source_at_all_says_so(capfd):
    e = zoo.get_entry("pose_hrnet_w32_256x256")  # official MPII: no public copy known
    assert e.urls == () and e.official_path == "models/pytorch/pose_mpii/pose_hrnet_w32_256x256.pth"
    with pytest.raises(UserError, match=r"no known download source.*get it from https://github.com/leoxiaobin"):
        zoo.fetch(e, progress=False)
