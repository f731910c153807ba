"""`dvc plots show` as one self-contained HTML page, readable without a network.

DVC's page loads vega, vega-lite and vega-embed from a CDN (cdn.jsdelivr.net), so on a
machine without internet it is blank. This script inlines the same three libraries, at
the versions DVC's page asks for, into an HTML template and runs
`dvc plots show --html-template` with it: DVC fills in the plots as usual and leaves its
CDN tags out (a template without a ``{scripts}`` placeholder gets none), so the page it
writes needs nothing but itself.

The libraries come from the npm registry through `npm pack`, once, into .cache/plots/
(git-ignored; each archive checked against the sha512 pinned below). On a machine
without npm, --vendor DIR names a folder that already holds vega.min.js,
vega-lite.min.js and vega-embed.min.js (from those npm packages' build/ folders).

    python bench/offline_plots.py             # every plot of dvc.yaml -> artifacts/plots/index.html
    python bench/offline_plots.py -o /tmp/p artifacts/tune/history.csv -x trial -y best
    python bench/offline_plots.py --vendor ~/vega     # the three files, fetched by hand

Every argument it does not know goes to `dvc plots show` unchanged. The template stays in
.cache/plots/offline.html, so `dvc plots show --html-template .cache/plots/offline.html`
works offline too once this has run.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache" / "plots"
OUT = ROOT / "artifacts" / "plots"

# what dvc_render 1.0.2 (DVC 3.67) loads from the CDN, with npm's integrity of each archive
LIBRARIES: tuple[tuple[str, str, str], ...] = (
    (
        "vega",
        "5.20.2",
        "sha512-qmH7aD9GGPpssVdxL1xgcdxTbQzyRUeRR16Os385ymvQhiwCYQNA6+eXUPAZDTVLfk0RXu6Jzj6kUE5jQ80EVw==",
    ),
    (
        "vega-lite",
        "5.2.0",
        "sha512-Yxcg8MvYfxHcG6BbkaKT0oVCIMIcE19UvqIsEwBmyd/7h2nzW7oRnID81T8UrY7hpDrIr6wa2JADOT2dhGNErw==",
    ),
    (
        "vega-embed",
        "6.18.2",
        "sha512-wcDyQPE4J5aiCDc3/suH5RQDvrKkjuLkhzUcbOLwEkNF8/+pp17tS0JghzEvAPNRg+5aG1/N2ydixq8Lk3dOlg==",
    ),
)

# the placeholders dvc_render replaces anywhere in a template, inlined code included
PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>RecOps plots (offline)</title>
{libraries}
    <style>
        table {{
            border-spacing: 15px;
        }}
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


class OfflinePlotsError(Exception):
    """A library that cannot be had, or a template DVC would break; one line for the user."""


def library_file(name: str) -> str:
    return f"{name}.min.js"


def integrity_of(archive: bytes) -> str:
    """npm's integrity string of an archive: ``sha512-`` and the base64 digest."""
    return "sha512-" + base64.b64encode(hashlib.sha512(archive).digest()).decode("ascii")


def unpack(name: str, archive: bytes, integrity: str) -> bytes:
    """The package's build/<name>.min.js from its npm archive, once the archive checks out."""
    if integrity_of(archive) != integrity:
        raise OfflinePlotsError(f"{name}: the npm archive does not match the pinned sha512")
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        member = tar.extractfile(f"package/build/{library_file(name)}")
        if member is None:
            raise OfflinePlotsError(f"{name}: no build/{library_file(name)} in its npm archive")
        return member.read()


def npm_pack(name: str, version: str) -> bytes:
    """The package's archive from the npm registry (``npm pack``, the ordinary client)."""
    npm = shutil.which("npm")
    if npm is None:
        raise OfflinePlotsError(
            "npm not found: install it, or pass --vendor DIR with "
            + ", ".join(library_file(n) for n, _, _ in LIBRARIES)
        )
    with tempfile.TemporaryDirectory() as folder:
        done = subprocess.run(
            [npm, "pack", f"{name}@{version}", "--pack-destination", folder, "--silent"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        archives = list(Path(folder).glob("*.tgz"))
        if done.returncode != 0 or len(archives) != 1:
            reason = (done.stderr.strip().splitlines() or ["no archive written"])[-1]
            raise OfflinePlotsError(f"npm pack {name}@{version} failed: {reason}")
        return archives[0].read_bytes()


def fetched(cache: Path = CACHE) -> dict[str, str]:
    """The three libraries' code, fetched into ``cache``/vendor/ the first time."""
    libraries = {}
    for name, version, integrity in LIBRARIES:
        target = cache / "vendor" / f"{name}-{version}.min.js"
        if not target.is_file():
            code = unpack(name, npm_pack(name, version), integrity)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".partial")
            partial.write_bytes(code)
            os.replace(partial, target)  # never half a library in the cache
        libraries[name] = target.read_text(encoding="utf-8")
    return libraries


def inline_script(name: str, code: str) -> str:
    """One library as an inline <script>; a ``</script`` inside it would end the tag early,
    so it is written ``<\\/script`` (the same characters to JavaScript)."""
    for placeholder in PLACEHOLDERS:
        if placeholder in code:
            raise OfflinePlotsError(f"{name} contains {placeholder}, which DVC would replace")
    code = code.replace("</script", "<\\/script")
    return f"    <script>/* {name} */\n{code}\n    </script>"


def template(libraries: dict[str, str]) -> str:
    """The HTML template for `dvc plots show --html-template`: the libraries inlined, no
    ``{scripts}`` (so DVC adds no CDN tags), DVC's ``{plot_divs}`` and ``{refresh_tag}``."""
    scripts = "\n".join(inline_script(name, code) for name, code in libraries.items())
    page = PAGE.format(libraries=scripts, refresh_tag="{refresh_tag}", plot_divs="{plot_divs}")
    return page


def read_vendor(folder: Path) -> dict[str, str]:
    libraries = {}
    for name, _, _ in LIBRARIES:
        path = folder / library_file(name)
        if not path.is_file():
            raise OfflinePlotsError(f"--vendor {folder}: no {library_file(name)}")
        libraries[name] = path.read_text(encoding="utf-8")
    return libraries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="other arguments (targets, -x, -y, --title, ...) go to `dvc plots show`",
    )
    parser.add_argument(
        "--vendor",
        type=Path,
        help="folder holding vega.min.js, vega-lite.min.js and vega-embed.min.js "
        "(default: fetched with npm pack into .cache/plots/vendor/)",
    )
    parser.add_argument(
        "-o", "--out", type=Path, default=OUT, help="folder for index.html (artifacts/plots/)"
    )
    parser.add_argument(
        "--cache", type=Path, default=CACHE, help="where the libraries and template are kept"
    )
    args, dvc_args = parser.parse_known_args(argv)
    try:
        libraries = read_vendor(args.vendor) if args.vendor else fetched(args.cache)
        page = args.cache / "offline.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_text(template(libraries), encoding="utf-8")
    except (OfflinePlotsError, OSError, subprocess.TimeoutExpired) as error:
        print(f"offline_plots: {error}", file=sys.stderr)
        return 2
    command = [sys.executable, "-m", "dvc", "plots", "show", "--html-template", str(page)]
    done = subprocess.run([*command, "-o", str(args.out), *dvc_args])
    if done.returncode != 0:
        return done.returncode
    html = args.out / "index.html"
    if not html.is_file() or "cdn.jsdelivr.net" in html.read_text(encoding="utf-8"):
        print(f"offline_plots: {html} is missing or still loads from a CDN", file=sys.stderr)
        return 1
    print(f"offline page: {html.resolve()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
