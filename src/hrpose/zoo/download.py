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
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

from hrpose.errors import UserError
from hrpose.zoo.home import cache_path, hrpose_home, is_offline
from hrpose.zoo.registry import ZooEntry

CHUNK = 1 << 20  # bytes read and written at a time: memory stays bounded whatever the server sends
MAX_DOWNLOAD_BYTES = 4 << 30  # no zoo file comes near this; a server sending more is refused
MAX_MEMBER_BYTES = 2 << 30  # largest zip member we extract
MAX_ZIP_RATIO = 200  # largest uncompressed/compressed ratio of a zip member (zip bombs)
ATTEMPTS = 4  # tries per URL without progress (connection errors, 5xx, cut bodies)
BACKOFF_S = 1.0  # sleep before the 2nd try; doubled each time
TIMEOUT_S = 30.0  # socket timeout per read
RETRY_STATUS = (408, 429, 500, 502, 503, 504)
USER_AGENT = "hrpose (model zoo downloader; python-urllib)"

_HEX = re.compile(r"^[0-9a-f]*$")


class DownloadError(Exception):
    """One URL could not deliver the file (after its retries); the caller tries the next URL."""


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
        + f". Run `hrpose models fetch {entry.name}` or place the right file from {entry.urls[0]}"
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
        if entry.is_archive:
            if entry.member_sha256:
                _verify_or_remove(target, entry.member_sha256, entry, "cached file")
        else:
            _verify_or_remove(target, entry.sha256, entry, "cached file")
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
    """Mirror URLs first (``<base>/<filename>`` for the config key then ``$HRPOSE_MIRROR``), then the registry's."""
    urls: list[str] = []
    for source, base in (("HRPOSE.MODEL_MIRROR", mirror), ("HRPOSE_MIRROR", os.environ.get("HRPOSE_MIRROR"))):
        base = (base or "").strip()
        if not base:
            continue
        if not base.startswith(("http://", "https://", "file://")):
            raise UserError(
                f"{source} must be a base URL starting with https://, http:// or file://, got {base!r}; "
                "the file URL is <base>/<file name>"
            )
        url = base.rstrip("/") + "/" + entry.filename
        if url not in urls:
            urls.append(url)
    urls.extend(u for u in entry.urls if u not in urls)
    return urls


def _content_range_start(value: str | None) -> tuple[int, int | None] | None:
    m = re.match(r"\s*bytes\s+(\d+)-(\d+)/(\d+|\*)", value or "")
    if not m:
        return None
    total = None if m.group(3) == "*" else int(m.group(3))
    return int(m.group(1)), total


def download(url: str, part: Path, *, progress: bool = True, desc: str = "") -> None:
    """Download ``url`` into ``part`` (appending to what is there when the server honours Range).

    Raises DownloadError when the URL gives up: a 4xx, or ATTEMPTS tries in a row without new bytes.
    """
    from tqdm import tqdm

    opener = urllib.request.build_opener()  # built now, so the *_proxy variables of this moment apply
    failures = 0
    total_tries = 0
    last = ""
    while True:
        have = part.stat().st_size if part.exists() else 0
        headers = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity"}
        if have:
            headers["Range"] = f"bytes={have}-"
        gained = 0
        try:
            with opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S) as resp:
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
                if total is not None and have < total:
                    raise _Retry(f"connection cut after {have} of {total} bytes")
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
            last = f"{e.__class__.__name__}: {reason}"
            if "CERTIFICATE" in str(reason).upper():
                raise DownloadError(f"TLS certificate problem ({reason})") from None
            if isinstance(reason, socket.gaierror):  # no DNS: no network here, or a wrong host; retrying won't help
                raise DownloadError(f"cannot resolve the host ({reason}): no network here, or a wrong host") from None
            if url.startswith("file:"):  # a local mirror: a missing file will not appear by retrying
                raise DownloadError(last) from None
        failures = 0 if gained else failures + 1
        total_tries += 1
        if failures >= ATTEMPTS or total_tries >= 10 * ATTEMPTS:
            raise DownloadError(f"gave up after {total_tries} tries: {last}")
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


def place_hint(entry: ZooEntry) -> str:
    """Which file to get from where, and where to put it in the cache (for offline users)."""
    dest = hrpose_home() / entry.kind / entry.filename
    msg = f"get {entry.urls[0]} on a connected machine and place it at {dest}"
    if entry.archive_member:
        msg += f" (or place its {entry.archive_member} at {cache_path(entry)})"
    if entry.sha256:
        msg += f"; it must have {describe_expected(entry.sha256)}"
    return msg


def offline_message(entry: ZooEntry) -> str:
    return (
        f"model {entry.name!r} is not in the cache and HRPOSE_OFFLINE is set, so nothing is downloaded: "
        f"{place_hint(entry)} (unset HRPOSE_OFFLINE to download it)"
    )


def fetch_entry(entry: ZooEntry, *, progress: bool = True, mirror: str | None = None) -> Path:
    """Cached file, else download + verify (+ extract). UserError when none of the URLs delivers it."""
    try:
        found = verified_cached(entry)
    except UserError as e:  # a bad cached file was removed: say so, then get a good one
        if is_offline():
            raise
        print(f"warning: {e}", file=sys.stderr)
        found = None
    if found is not None:
        return found
    if is_offline():
        raise UserError(offline_message(entry))
    urls = candidate_urls(entry, mirror)
    kind_dir = hrpose_home() / entry.kind
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
    part = dest.with_name(dest.name + ".part")
    errors: list[str] = []
    with _lock(dest):
        found = verified_cached(entry)  # another process may have fetched it while we waited
        if found is not None:
            return found
        for url in urls:
            for fresh in (False, True):
                if fresh:
                    _remove(part)
                resumed = part.exists() and part.stat().st_size > 0
                if progress:
                    print(f"downloading {entry.name} from {url} to {dest}", file=sys.stderr)
                try:
                    download(url, part, progress=progress, desc=entry.filename)
                except DownloadError as e:
                    errors.append(f"{url}: {e}")
                    break
                digest = sha256_file(part)
                if hash_matches(entry.sha256, digest):
                    os.replace(part, dest)
                    _write_stamp(dest, digest)
                    if not entry.is_archive:
                        return dest
                    try:
                        return _extract_and_drop(dest, entry)
                    except UserError as e:  # not a usable zip (an HTML page, no member, bad CRC): next URL
                        errors.append(f"{url}: {e}")
                        break
                html = _looks_like_html(part)
                _remove(part)
                if resumed and not fresh:
                    continue  # the old partial file may have been the bad part: one clean try
                errors.append(
                    f"{url}: expected {describe_expected(entry.sha256)}, got sha256 {digest}"
                    + (" - the server returned an HTML page instead of the file (an error or login page?)"
                       if html else "")
                )
                break
    raise UserError(
        f"could not fetch model {entry.name!r}: " + "; ".join(errors)
        + f". Get {entry.urls[0]} by other means and place it at {dest}, or set HRPOSE_MIRROR to a server holding "
        f"{entry.filename} (see docs/models.md)"
    )
