"""Fetching zoo files: cache lookup, download (urllib only), verification, safe zip extraction.

See :mod:`hrpose.zoo` for the cache layout and the environment variables. A download goes to
``<kind>/<filename>.part`` beside its final place, resumes with an HTTP ``Range`` request after a cut
connection (and starts over when the server ignores ``Range``), retries connection errors and 5xx answers with
exponential backoff, is hashed, and only then renamed into place (``os.replace``: atomic on one file system).
A file whose digest does not match is removed and reported with the expected and the actual digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from hrpose.errors import UserError
from hrpose.zoo.home import cache_path, hrpose_home, is_offline
from hrpose.zoo.net import DownloadError, _resolve
from hrpose.zoo.registry import ZooEntry
from hrpose.zoo.sources import Source, onnx_structure_problem, record_trust, sources, torch_file_problem, trusted

CHUNK = 1 << 20  # bytes read and written at a time: memory stays bounded whatever the server sends
MAX_DOWNLOAD_BYTES = 4 << 30  # no zoo file comes near this; a server sending more is refused
MAX_MEMBER_BYTES = 2 << 30  # largest zip member we extract
MAX_ZIP_RATIO = 200  # largest uncompressed/compressed ratio of a zip member (zip bombs)
ATTEMPTS = 4  # tries per URL without progress (connection errors, 5xx, cut bodies)
BACKOFF_S = 1.0  # sleep before the 2nd try; doubled each time
TIMEOUT_S = 30.0  # socket timeout per connect and read ($HRPOSE_DOWNLOAD_TIMEOUT)
DEADLINE_BASE_S = 300.0  # one source's total time: this plus the announced size at MIN_RATE ...
MIN_RATE = 50_000.0  # ... bytes/s; a mirror trickling bytes forever is cut off there ($HRPOSE_DOWNLOAD_DEADLINE)
DEADLINE_MAX_S = 4 * 3600.0  # and never more than this (also the bound when no size is announced)
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
USER_AGENT = "hrpose (model zoo downloader; python-urllib)"

_HEX = re.compile(r"^[0-9a-f]*$")


# ----------------------------------------------------------------------------------------------------
# hashes


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def hash_matches(expected: str, actual: str) -> bool:
    """Full digest: equal; shorter: a prefix of ``actual``; empty: nothing to check."""
    expected = expected.strip().lower()
    return actual.lower().startswith(expected)


def describe_expected(expected: str) -> str:
    if not expected:
        return "no published digest"
    if len(expected) == 64:
        return f"sha256 {expected}"
    return f"sha256 starting {expected} (the prefix published in the file name)"


def _looks_like_html(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(1024).lstrip().lower()
    except OSError:
        return False
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml")) or b"<html" in head[:256]


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamped_digest(path: Path) -> str | None:
    """The digest recorded for ``path`` when its size and mtime are still those recorded with it."""
    try:
        digest, size, mtime = _stamp(path).read_text().split()
        st = path.stat()
    except (OSError, ValueError):
        return None
    if int(size) == st.st_size and int(mtime) == st.st_mtime_ns and len(digest) == 64 and _HEX.match(digest):
        return digest
    return None


def _write_stamp(path: Path, digest: str) -> None:
    st = path.stat()
    with contextlib.suppress(OSError):  # a read-only cache still works, it just re-hashes
        _stamp(path).write_text(f"{digest} {st.st_size} {st.st_mtime_ns}\n")


def _remove(path: Path) -> bool:
    """Delete a file and its stamp; False when the file could not be deleted (read-only cache)."""
    with contextlib.suppress(OSError):
        _stamp(path).unlink()
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:
        return False
    return True


def file_digest(path: Path) -> str:
    """The SHA-256 of a cached file, from its stamp when still valid, else hashed (and stamped)."""
    digest = _stamped_digest(path)
    if digest is None:
        digest = sha256_file(path)
        _write_stamp(path, digest)
    return digest


def _verify_or_remove(path: Path, expected: str, entry: ZooEntry, where: str) -> None:
    digest = file_digest(path)
    if hash_matches(expected, digest):
        return
    html = _looks_like_html(path)
    removed = _remove(path)
    raise UserError(
        f"{where} {path} for model {entry.name!r} is corrupt or not the published file: expected "
        f"{describe_expected(expected)}, got sha256 {digest}"
        + (" (it is an HTML page, not a checkpoint)" if html else "")
        + ("; it was removed" if removed else "; delete it")
        + f". Run `hrpose models fetch {entry.name}` or place the right file from {origin(entry)}"
    )


# ----------------------------------------------------------------------------------------------------
# cache lookup


def cache_state(entry: ZooEntry) -> str:
    """For listings, without hashing: 'verified', 'present' (not yet verified), 'zip' (not extracted) or ''."""
    target = cache_path(entry)
    if target.is_file():
        return "verified" if _stamped_digest(target) is not None or entry.is_archive else "present"
    if entry.is_archive and (hrpose_home() / entry.kind / entry.filename).is_file():
        return "zip"
    return ""


def verified_cached(entry: ZooEntry) -> Path | None:
    """The entry's usable file when it is in the cache and verifies; None when absent; UserError when bad."""

    target = cache_path(entry)
    if target.is_file():
        expected = entry.member_sha256 if entry.is_archive else entry.sha256
        if expected:
            _verify_or_remove(target, expected, entry, "cached file")
        if len(expected) != 64 and (rec := trusted(entry)) is not None:  # trust on first use: must still match
            _verify_or_remove(target, rec["sha256"], entry, "cached file (checked against the cache's trust.json)")
        return target
    if entry.is_archive:
        archive = hrpose_home() / entry.kind / entry.filename
        if archive.is_file():  # downloaded earlier but not extracted, or placed by hand
            _verify_or_remove(archive, entry.sha256, entry, "cached archive")
            return _extract_and_drop(archive, entry)
    return None


# ----------------------------------------------------------------------------------------------------
# zips


def extract_member(archive: Path, entry: ZooEntry) -> Path:
    """Extract ``entry.archive_member`` to its cache path; the output name never comes from the archive."""
    assert entry.archive_member is not None
    target = cache_path(entry)
    want = entry.archive_member
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        html = _looks_like_html(archive)
        raise UserError(
            f"{archive} for model {entry.name!r} is not a readable zip archive ({e})"
            + (" - the server returned an HTML page" if html else "")
            + f"; run `hrpose models fetch {entry.name}`"
        ) from None
    with zf:
        infos = [
            i
            for i in zf.infolist()
            if not i.is_dir() and (i.filename == want or PurePosixPath(i.filename).name == want)
        ]
        if len(infos) != 1:
            names = ", ".join(i.filename for i in zf.infolist()[:10])
            raise UserError(
                f"{archive} for model {entry.name!r}: expected exactly one member named {want!r}, found "
                f"{len(infos)} (members: {names or 'none'}); run `hrpose models fetch {entry.name}`"
            )
        info = infos[0]
        is_link = (info.external_attr >> 16) & 0o170000 == 0o120000
        ratio = info.file_size / max(info.compress_size, 1)
        if is_link or info.file_size > MAX_MEMBER_BYTES or (info.file_size > CHUNK and ratio > MAX_ZIP_RATIO):
            raise UserError(
                f"{archive} for model {entry.name!r}: member {info.filename!r} refused ("
                + ("a symbolic link" if is_link else f"{info.file_size} bytes, compression ratio {ratio:.0f}")
                + f"; limits {MAX_MEMBER_BYTES} bytes, ratio {MAX_ZIP_RATIO})"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".part")
        written = 0
        try:
            with zf.open(info) as src, open(tmp, "wb") as dst:
                while chunk := src.read(CHUNK):
                    written += len(chunk)
                    if written > info.file_size:  # never trust the header alone
                        raise zipfile.BadZipFile(f"member larger than its header's {info.file_size} bytes")
                    dst.write(chunk)
        except (zipfile.BadZipFile, OSError, EOFError) as e:  # bad CRC-32, truncated data, ...
            _remove(tmp)
            raise UserError(
                f"{archive} for model {entry.name!r}: member {info.filename!r} is corrupt ({e}); "
                f"run `hrpose models fetch {entry.name}`"
            ) from None
    os.replace(tmp, target)
    digest = sha256_file(target)
    _write_stamp(target, digest)
    if entry.member_sha256:
        _verify_or_remove(target, entry.member_sha256, entry, "extracted member")
    return target


def _extract_and_drop(archive: Path, entry: ZooEntry) -> Path:
    """Extract the member, then delete the zip (the member is what we use); a bad zip is deleted too."""
    try:
        member = extract_member(archive, entry)
    except UserError as e:
        removed = _remove(archive)
        raise UserError(f"{e} ({archive} {'was removed' if removed else 'must be deleted'})") from None
    _remove(archive)
    return member


# ----------------------------------------------------------------------------------------------------
# HTTP


def candidate_urls(entry: ZooEntry, mirror: str | None = None) -> list[str]:
    """The URLs of ``sources(entry, mirror)``: mirrors first (``<base>/<file>``), then the registry's."""

    return [s.url for s in sources(entry, mirror, timeout=read_timeout())]


def read_timeout() -> float:
    """Seconds one socket read (or connect) may wait: ``$HRPOSE_DOWNLOAD_TIMEOUT`` else TIMEOUT_S."""
    return _env_seconds("HRPOSE_DOWNLOAD_TIMEOUT", TIMEOUT_S)


def _env_seconds(var: str, default: float) -> float:
    text = os.environ.get(var, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e7:
        raise UserError(f"{var} must be a number of seconds > 0, got {text!r}; unset it for the default")
    return value


def source_deadline(total: int | None) -> float:
    """Seconds one source may take in all (a mirror trickling bytes forever is cut off):
    ``$HRPOSE_DOWNLOAD_DEADLINE`` else DEADLINE_BASE_S plus the size at MIN_RATE bytes/s (unknown: MAX)."""
    fixed = _env_seconds("HRPOSE_DOWNLOAD_DEADLINE", 0.0)
    if fixed:
        return fixed
    if total is None:
        return DEADLINE_MAX_S
    return min(DEADLINE_BASE_S + total / MIN_RATE, DEADLINE_MAX_S)


def _content_range_start(value: str | None) -> tuple[int, int | None] | None:
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), total


def download(url: str, part: Path, *, progress: bool = True, desc: str = "") -> None:
    """Download ``url`` into ``part`` (appending to what is there when the server honours Range).

    Raises DownloadError when the URL gives up, with the reason in words: the name does not resolve, the
    connection is refused or times out, a TLS error, an HTTP error, ATTEMPTS tries in a row without new bytes
    (5xx answers, cut bodies), or the source's total time (``source_deadline``) is spent.
    """
    from tqdm import tqdm

    timeout = read_timeout()
    _resolve(url, timeout)
    opener = urllib.request.build_opener()  # built now, so the *_proxy variables of this moment apply
    started = time.monotonic()
    deadline = source_deadline(None)
    failures = 0
    total_tries = 0
    best = 0  # the most bytes held so far: a try that ends below it made no progress (a server cutting at the
    last = ""  # same place while ignoring Range must not be retried forever)
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        gained = 0
        got_response = False
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=timeout) as resp:
                got_response = True
                status = getattr(resp, "status", None) or 200
                length = resp.headers.get("Content-Length")
                total: int | None = None
                if have and status == 206:
                    cr = _content_range_start(resp.headers.get("Content-Range"))
                    if cr is None or cr[0] != have:
                        raise DownloadError(f"bad Content-Range {resp.headers.get('Content-Range')!r}")
                    mode, total = "ab", cr[1]
                else:  # no resume (first try, or the server ignored Range): start over
                    mode, have = "wb", 0
                    total = int(length) if length and length.isdigit() else None
                if total is not None and total > MAX_DOWNLOAD_BYTES:
                    raise DownloadError(f"the server announces {total} bytes, over the {MAX_DOWNLOAD_BYTES} limit")
                deadline = source_deadline(total)
                with open(part, mode) as f, tqdm(
                    total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                    desc=desc or part.name, disable=not progress, file=sys.stderr, leave=False,
                ) as bar:
                    read = getattr(resp, "read1", resp.read)  # read1: what has arrived, kept if the link stalls
                    while True:
                        try:
                            chunk = read(CHUNK)
                        except (OSError, http.client.HTTPException) as e:
                            raise _Retry(f"connection cut after {have} bytes ({e.__class__.__name__}: {e})") from None
                        if not chunk:
                            break
                        try:
                            f.write(chunk)
                        except OSError as e:  # disk full, quota, ...: not the server's fault, no retry
                            raise UserError(f"cannot write {part} ({e}); free space or set HRPOSE_HOME") from None
                        have += len(chunk)
                        gained += len(chunk)
                        bar.update(len(chunk))
                        if have > MAX_DOWNLOAD_BYTES:
                            raise DownloadError(f"more than {MAX_DOWNLOAD_BYTES} bytes: refused")
                        if time.monotonic() - started > deadline:
                            raise DownloadError(
                                f"too slow: {have} bytes in {time.monotonic() - started:.0f} s, over this source's "
                                f"{deadline:g} s limit (HRPOSE_DOWNLOAD_DEADLINE)"
                            )
                if total is not None and have < total:
                    raise _Retry(f"short body: connection cut after {have} of {total} bytes")
                if total is not None and have > total:
                    raise DownloadError(f"received {have} bytes, more than the announced {total}")
                return
        except urllib.error.HTTPError as e:
            e.close()
            if e.code == 416 and have:  # our partial file is not a prefix the server knows: start over
                part.unlink()
                last = "HTTP 416 on resume"
            elif e.code in RETRY_STATUS:
                last = f"HTTP {e.code} {e.reason}"
            else:
                raise DownloadError(f"HTTP {e.code} {e.reason}") from None
        except _Retry as e:
            last = str(e)
        except (urllib.error.URLError, OSError, http.client.HTTPException) as e:
            reason = getattr(e, "reason", e)
            if isinstance(reason, ssl.SSLError) or "CERTIFICATE" in str(reason).upper():
                detail = getattr(reason, "verify_message", "") or str(reason)
                raise DownloadError(f"TLS error: {detail}") from None
            if isinstance(reason, socket.gaierror):  # no DNS: no network here, or a wrong host; retrying won't help
                raise DownloadError(f"name not resolved ({reason}): no network here, or a wrong host") from None
            if isinstance(reason, ConnectionRefusedError):
                raise DownloadError("connection refused") from None
            if isinstance(reason, TimeoutError | socket.timeout) and not got_response:
                raise DownloadError(f"timed out: no answer within {timeout:g} s") from None
            last = f"{e.__class__.__name__}: {reason}"
            if url.startswith("file:") or not got_response:  # a missing local file, an unreachable host: next
                raise DownloadError(last) from None
        held = part.stat().st_size if part.exists() else 0
        failures = 0 if gained and held > best else failures + 1
        best = max(best, held)
        total_tries += 1
        if failures >= ATTEMPTS or total_tries >= 10 * ATTEMPTS:
            raise DownloadError(f"gave up after {total_tries} tries: {last}")
        if time.monotonic() - started > deadline:
            raise DownloadError(f"gave up after {time.monotonic() - started:.0f} s (over {deadline:g} s): {last}")
        time.sleep(BACKOFF_S * 2 ** max(failures - 1, 0))


class _Retry(Exception):
    pass


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """An advisory lock so two processes do not download the same file at once (POSIX; a no-op elsewhere)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def origin(entry: ZooEntry) -> str:
    """Where to get the file by hand: its first URL, else the page that lists it."""
    return entry.urls[0] if entry.urls else entry.source


def place_hint(entry: ZooEntry) -> str:
    """Which file to get from where, and where to put it in the cache (for offline users)."""
    dest = hrpose_home() / entry.kind / entry.filename
    if entry.is_archive:
        msg = (f"get {entry.urls[0]} (or its member, {' or '.join(entry.urls[1:]) or entry.member_filename}) on a "
               f"connected machine and place the zip at {dest} or the .onnx at {cache_path(entry)}")
    elif entry.urls:
        msg = f"get {entry.urls[0]} on a connected machine and place it at {dest}"
    else:
        msg = (f"no download source is known for {entry.filename}: get it from {entry.source} (the official "
               f"release) and place it at {dest}")
    if entry.sha256:
        msg += f"; it must have {describe_expected(entry.sha256)}"
    return msg


def offline_message(entry: ZooEntry) -> str:
    return (
        f"model {entry.name!r} is not in the cache and HRPOSE_OFFLINE is set, so nothing is downloaded: "
        f"{place_hint(entry)} (unset HRPOSE_OFFLINE to download it)"
    )


class FetchError(UserError):
    """Every source of an entry failed; ``tried`` holds one "source: reason" per source."""

    def __init__(self, message: str, entry: ZooEntry, tried: list[str]) -> None:
        super().__init__(message)
        self.entry = entry
        self.tried = tried


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _check_file(path: Path, entry: ZooEntry, src: Source) -> tuple[str, str]:
    """(sha256, problem) of a downloaded file that is the entry's usable file itself ('' problem = good)."""

    size = path.stat().st_size
    wants = [(entry.size if not entry.is_archive else 0, "published size")]
    if src.manifest is not None:
        wants.append((int(src.manifest["size"]), "the mirror's manifest"))
    for want_size, whose in wants:
        if want_size and size != want_size:
            html = " (an HTML page instead of the file)" if _looks_like_html(path) else ""
            return "", f"size mismatch: {size} bytes, expected {want_size} ({whose}){html}"
    digest = sha256_file(path)
    expected = entry.member_sha256 if entry.is_archive else entry.sha256
    if not hash_matches(expected, digest):
        html = " - the server sent an HTML page instead of the file" if _looks_like_html(path) else ""
        return digest, f"hash mismatch: expected {describe_expected(expected)}, got sha256 {digest}{html}"
    if src.manifest is not None and digest != src.manifest["sha256"]:
        return digest, f"hash mismatch: the mirror's manifest says sha256 {src.manifest['sha256']}, got {digest}"
    rec = trusted(entry) if len(expected) != 64 else None
    if rec is not None and digest != rec["sha256"]:
        return digest, (f"hash mismatch: sha256 {digest} differs from {rec['sha256']}, recorded on the first "
                        f"verified fetch ({rec.get('source', '?')}, {rec.get('time', '?')}) in the cache's trust.json")
    if entry.kind == "detector":
        problem = onnx_structure_problem(path, entry)
        if problem:
            return digest, problem + (" (an HTML page instead of the file)" if _looks_like_html(path) else "")
    elif entry.filename.endswith(".pth"):
        problem = torch_file_problem(path)
        if problem:
            return digest, problem
    return digest, ""


def _try_source(entry: ZooEntry, src: Source, kind_dir: Path, progress: bool) -> Path:
    """Download from one source, check, move into the cache; DownloadError (the reason) when it fails."""

    if src.manifest_error:
        raise DownloadError(f"mirror not usable: {src.manifest_error}")
    member = cache_path(entry)
    target = kind_dir / entry.filename if (src.archive or not entry.is_archive) else member
    target.parent.mkdir(parents=True, exist_ok=True)
    part = target.with_name(target.name + ".part")
    for fresh in (False, True):
        if fresh:
            _remove(part)
        resumed = part.exists() and part.stat().st_size > 0
        if progress:
            _note(f"downloading {entry.name} from {src.url} ({src.label})")
        download(src.url, part, progress=progress, desc=entry.filename)
        if src.archive:
            digest = sha256_file(part)
            if not hash_matches(entry.sha256, digest):
                problem = f"hash mismatch: expected {describe_expected(entry.sha256)}, got sha256 {digest}"
            else:
                os.replace(part, target)
                try:
                    got = _extract_and_drop(target, entry)
                except UserError as e:  # not a usable zip (an HTML page, no member, bad CRC)
                    raise DownloadError(_short(str(e))) from None
                digest, problem = _check_file(got, entry, src)
                if not problem:
                    record_trust(entry, digest, got.stat().st_size, src.url)
                    return got
                _remove(got)
                raise DownloadError(problem)
        else:
            digest, problem = _check_file(part, entry, src)
            if not problem:
                os.replace(part, target)
                _write_stamp(target, digest)
                if len(entry.member_sha256 if entry.is_archive else entry.sha256) != 64:
                    record_trust(entry, digest, target.stat().st_size, src.url)
                return target
        _remove(part)
        if resumed and not fresh:
            continue  # the old partial file may have been the bad part: one clean try
        raise DownloadError(problem)
    raise AssertionError("unreachable")


def _short(text: str) -> str:
    """A reason for the one-line summary: the first sentence of a longer message."""
    return re.sub(r"[.;] [Rr]un `hrpose models fetch [^`]*`", "", text)


def fetch_entry(entry: ZooEntry, *, progress: bool = True, mirror: str | None = None) -> Path:
    """Cached file, else each source in turn (download, check, extract); a FetchError naming every source
    tried with its reason when none delivers it. Each failing source prints one line before the next is tried."""

    try:
        found = verified_cached(entry)
    except UserError as e:  # a bad cached file was removed: say so, then get a good one
        if is_offline():
            raise
        _note(f"warning: {e}")
        found = None
    if found is not None:
        return found
    if is_offline():
        raise UserError(offline_message(entry))
    srcs = sources(entry, mirror, timeout=read_timeout())
    kind_dir = hrpose_home() / entry.kind
    if not srcs:
        raise FetchError(
            f"could not fetch model {entry.name!r}: it has no known download source (set HRPOSE_MIRROR to a mirror "
            f"that holds {entry.member_filename}); {place_hint(entry)}", entry, []
        )
    try:
        kind_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot create the model cache {kind_dir} ({e}); set HRPOSE_HOME to a writable folder"
        ) from None
    if not os.access(kind_dir, os.W_OK | os.X_OK):
        raise UserError(
            f"the model cache {kind_dir} is not writable, so {entry.name!r} cannot be downloaded there; set "
            f"HRPOSE_HOME to a writable folder, or {place_hint(entry)}"
        )
    dest = kind_dir / entry.filename
    tried: list[str] = []
    with _lock(dest):
        found = verified_cached(entry)  # another process may have fetched it while we waited
        if found is not None:
            return found
        for n, src in enumerate(srcs, 1):
            try:
                return _try_source(entry, src, kind_dir, progress)
            except DownloadError as e:
                line = f"{src.label} {src.url}: {e}"
                tried.append(line)
                more = "trying the next source" if n < len(srcs) else "no more sources"
                _note(f"{entry.name}: source {n}/{len(srcs)} failed: {line}; {more}")
    raise FetchError(
        f"could not fetch model {entry.name!r} from any of its {len(srcs)} sources: "
        + "; ".join(f"[{i}] {t}" for i, t in enumerate(tried, 1))
        + f". To place it by hand: {place_hint(entry)}; or set HRPOSE_MIRROR to a mirror holding "
        f"{entry.member_filename} (docs/models.md)",
        entry, tried,
    )
