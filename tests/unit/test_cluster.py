from __future__ import annotations

import socket
import time

import pytest

from orchestrator.cluster import check_reachable


def test_an_address_where_nothing_listens_fails_at_once() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        t0 = time.monotonic()
        with pytest.raises(ConnectionError, match=f"nothing answers at 127.0.0.1:{port}"):
            check_reachable(f"127.0.0.1:{port}")
        assert time.monotonic() - t0 < 5


def test_a_listening_address_passes_and_other_forms_are_left_to_ray() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        check_reachable(f"127.0.0.1:{s.getsockname()[1]}")
    check_reachable("auto")
    check_reachable("ray://head:10001")


def test_environment_names_the_cluster_and_the_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from orchestrator.cluster import resolve_address
    from orchestrator.paths import db_url

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("ORCHESTRATOR_DB", raising=False)
    assert resolve_address(None) is None
    assert db_url(tmp_path) == f"sqlite:///{tmp_path / 'catalog.db'}"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")
    monkeypatch.setenv("ORCHESTRATOR_DB", "postgresql://u@db/cat")
    assert resolve_address(None) == "10.0.0.1:6379"
    assert resolve_address("head:6379") == "head:6379"  # the option wins over the environment
    assert db_url(tmp_path) == "postgresql://u@db/cat"
    assert db_url(tmp_path, "sqlite:///x.db") == "sqlite:///x.db"
