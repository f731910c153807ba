"""`make run PROFILE=shop`: a profile's `-S` lines written into params.yaml, validated first,
comments kept; the shipped shop profile gives valid params."""

from __future__ import annotations

import shutil

from pipelines.core.config import load_params, overridden_params, parse_overrides
from pipelines.core.paths import PROJECT
from pipelines.stages import profile

SHOP = PROJECT.root / "profiles" / "shop.args"


def test_the_shop_profile_is_written_into_params_yaml_with_its_comments(tmp_path, capsys) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(PROJECT.params, params)
    assert profile.main([str(SHOP), "--params", str(params)]) == 0
    overrides = parse_overrides(SHOP.read_text().splitlines())
    assert load_params(params) == overridden_params(PROJECT.params, overrides)[1]
    written = params.read_text()
    assert "# Every tunable number of the pipeline" in written, "comments kept"
    assert "  mask_history: false\n" in written
    shop = load_params(params)
    assert shop.ingest.source == "table" and not shop.evaluate.mask_history
    assert shop.ingest.table.columns["user_id"] == "customer_id"
    assert f"{len(overrides)} of {len(overrides)} values set" in capsys.readouterr().out
    assert profile.main([str(SHOP), "--params", str(params)]) == 0  # again: nothing changes
    assert params.read_text() == written


def test_a_bad_profile_leaves_params_yaml_byte_identical(tmp_path, capsys) -> None:
    params = tmp_path / "params.yaml"
    shutil.copy(PROJECT.params, params)
    before = params.read_bytes()
    for line, message in (
        ("-S evaluate.mask_histroy=false", "mask_histroy"),
        ("-S split.min_users=0", "split.min_users"),
        ("-S ingset.source=table", "ingset"),
    ):
        bad = tmp_path / "bad.args"
        bad.write_text(line + "\n")
        assert profile.main([str(bad), "--params", str(params)]) == 2
        err = capsys.readouterr().err
        assert message in err and "left unchanged" in err and len(err.splitlines()) == 1
        assert params.read_bytes() == before
    assert profile.main([str(tmp_path / "missing.args"), "--params", str(params)]) == 2
