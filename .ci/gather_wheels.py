"""Puts the wheels of a `pip install --dry-run --report` into a directory, for .ci/docker_smoke.sh.

    python gather_wheels.py REPORT_JSON DEST_DIR CACHE_DIR

The host's own wheels are hard-linked (copied only across file systems) so that the image's pip installs
exactly what the host runs without asking the index; those the host only knows from an index are downloaded
once into CACHE_DIR and kept there for the next run. Exits non-zero (DEST_DIR then holds a partial set, which
the caller removes) when a requirement is not a wheel, since pip could not install it without the index.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote, urlparse


def wheel_files(report: dict, cache: Path) -> tuple[list[Path], list[str]]:
    """(every file to place, the URLs of those that must be downloaded into cache first)."""
    files, to_download = [], []
    for item in report["install"]:
        url = item["download_info"]["url"]
        name = unquote(urlparse(url).path.rsplit("/", 1)[-1])
        if url.startswith("file://"):
            files.append(Path(unquote(urlparse(url).path)))
        elif (cache / name).is_file():
            files.append(cache / name)
        else:
            to_download.append(url)
            files.append(cache / name)
    return files, to_download


def download(urls: list[str], cache: Path) -> None:
    print(f"downloading {len(urls)} wheels the host does not have into {cache}/", flush=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--disable-pip-version-check",
                    "--dest", str(cache), *urls], check=True)


def place(files: list[Path], dest: Path) -> None:
    linked = copied = size = 0
    for path in files:
        if path.suffix != ".whl":
            sys.exit(f"{path.name} is not a wheel: leaving docker/wheels/ to pip's index")
        try:
            os.link(path, dest / path.name)
            linked += 1
        except OSError:  # another file system
            shutil.copy2(path, dest / path.name)
            copied += 1
        size += path.stat().st_size
    print(f"{linked} wheels hard-linked, {copied} copied ({size / 1e9:.2f} GB) into {dest}/")


def main(argv: list[str]) -> None:
    if len(argv) != 3:
        sys.exit(__doc__)
    report, dest, cache = json.loads(Path(argv[0]).read_text()), Path(argv[1]), Path(argv[2])
    files, to_download = wheel_files(report, cache)
    if to_download:
        download(to_download, cache)
    place(files, dest)


if __name__ == "__main__":
    main(sys.argv[1:])
