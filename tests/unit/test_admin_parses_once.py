"""A write through the API parses its document once: the checker and the snapshot pipeline
share what the API parsed (``AdminContext.parser``), whatever copy of it the store keeps."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.admin_harness import listener, new_store, route, running_api
from xds_server.model.config_parser import ConfigParser


@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_writes_and_the_config_of_each_revision_parse_nothing_again(
    store_kind: str, tmp_path: Path
) -> None:
    parser = ConfigParser()
    async with running_api(new_store(store_kind, tmp_path), parser=parser) as api:
        assert (await api.put("listeners/public", listener())).status_code == 201
        for name in ("a", "b", "c"):
            assert (await api.put(f"routes/{name}", route(name))).status_code == 201
        changed = route("b", hostnames=["b.example.com"])
        assert (await api.put("routes/b", changed)).status_code == 200
        assert parser.parsed == 0  # every document was parsed by the API, and only there

        state = api.store.current()
        config = parser.config_of(
            (d.kind, d.name, d.spec, d.created_revision) for d in state.documents.values()
        )
        assert parser.parsed == 0
        assert config.routes["b"].spec.hostnames == ("b.example.com",)
        assert sorted(config.routes) == ["a", "b", "c"]
