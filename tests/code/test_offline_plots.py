"""bench/offline_plots.py: `dvc plots show` as a page that needs no network (docs/architecture.md).

Stand-in libraries keep these tests offline and fast; the real vega bundles from npm were
checked by hand in headless Chromium with the network cut (docs/architecture.md says how).
"""

from __future__ import annotations

import importlib.util
import io
import subprocess
import sys
import tarfile

import pytest

from pipelines.core.paths import PROJECT


def load_tool():
    spec = importlib.util.spec_from_file_location(
        "bench_offline_plots", PROJECT.root / "bench" / "offline_plots.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


tool = load_tool()
STUBS = {name: f"window.stub_{i} = '</script>';" for i, (name, _, _) in enumerate(tool.LIBRARIES)}


def test_the_template_inlines_the_libraries_and_leaves_dvc_no_place_for_cdn_tags() -> None:
    page = tool.template(STUBS)
    assert "{plot_divs}" in page and "{refresh_tag}" in page
    assert "{scripts}" not in page  # where DVC would put its CDN <script src=...> tags
    assert "src=" not in page and "http" not in page
    for i in range(len(STUBS)):
        # a "</script" inside a library would close its tag early
        assert f"window.stub_{i} = '<\\/script>';" in page


def test_a_library_holding_a_dvc_placeholder_is_refused() -> None:
    with pytest.raises(tool.OfflinePlotsError, match="plot_divs"):
        tool.template({"vega": "var s = '{plot_divs}';"})


def npm_archive(name: str, code: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(f"package/build/{name}.min.js")
        info.size = len(code)
        tar.addfile(info, io.BytesIO(code))
    return buffer.getvalue()


def test_an_archive_is_unpacked_only_when_it_matches_its_integrity() -> None:
    archive = npm_archive("vega", b"var vega = 1;")
    assert tool.unpack("vega", archive, tool.integrity_of(archive)) == b"var vega = 1;"
    with pytest.raises(tool.OfflinePlotsError, match="sha512"):
        tool.unpack("vega", archive + b"x", tool.integrity_of(archive))


def test_dvc_writes_a_page_with_the_libraries_inlined_and_no_cdn(tmp_path, monkeypatch) -> None:
    vendor = tmp_path / "vendor"
    vendor.mkdir()
    for name, code in STUBS.items():
        (vendor / f"{name}.min.js").write_text(code)
    project = tmp_path / "project"
    project.mkdir()
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=project, check=True)
    (project / "history.csv").write_text("trial,best\n0,0.0712\n1,0.0834\n")
    monkeypatch.chdir(project)
    out = tmp_path / "out"
    argv = ["--vendor", str(vendor), "--cache", str(tmp_path / "cache"), "-o", str(out)]
    assert tool.main([*argv, "history.csv", "-x", "trial", "-y", "best"]) == 0
    page = (out / "index.html").read_text()
    assert "cdn.jsdelivr.net" not in page and "<script src" not in page
    assert "window.stub_0" in page and "0.0834" in page  # the libraries and the data
    assert (tmp_path / "cache" / "offline.html").is_file()  # reusable with --html-template


def test_a_missing_library_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    assert tool.main(["--vendor", str(tmp_path), "--cache", str(tmp_path / "c")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("offline_plots: --vendor") and "vega.min.js" in err
    assert "\n" not in err
