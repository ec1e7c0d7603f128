"""Parked products in RocksDB (``rocksdb://``): the engine gives the same outputs as with the heap store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamproc.demand import DemandEngine
from streamproc.state_store import ParkedFiles

from . import engine_replay as er
from .test_engine_equivalence import _compare

pytest.importorskip("rocksdict")


def test_parked_map_behaves_like_a_dict(tmp_path: Path) -> None:
    files = ParkedFiles(tmp_path / "parked")
    m = files(0)
    m["a"], m["b"] = b"1", b"2"
    assert "a" in m and "z" not in m and len(m) == 2 and sorted(m) == ["a", "b"]
    assert m.pop("a") == b"1" and m.get("a") is None and m["b"] == b"2"
    with pytest.raises(KeyError):
        del m["a"]
    assert ParkedFiles(tmp_path / "parked") and not (tmp_path / "parked").exists()  # scratch: emptied at start


def test_engine_outputs_with_parked_products_in_rocksdb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    files = ParkedFiles(tmp_path / "parked")
    engines: list[DemandEngine] = []
    init = DemandEngine.__init__

    def make(self: DemandEngine, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self.cold_store = files
        engines.append(self)

    monkeypatch.setattr(DemandEngine, "__init__", make)
    _compare("engine/surges/500", er.digest(er.run_engine(500)))  # quiet spells: products parked and woken
    _compare("runtime/surges/500", er.digest(er.run_runtime("surges", 500)))
    assert sum(e.parks for e in engines) > 0 and sum(e.wakes for e in engines) > 0
    assert any(type(u.cold).__name__ == "_ParkedMap" for e in engines for u in e.units.values())
