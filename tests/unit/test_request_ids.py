"""A generated ``X-Request-ID`` is ``req-`` and a version-4 UUID, new for every request and
different in every serving process, forked ones included (``llmo serve --workers N``)."""

from __future__ import annotations

import multiprocessing
import uuid
from multiprocessing.connection import Connection

from llm_orchestrator.api.headers import choose_request_id, new_request_id


def test_a_generated_request_id_is_a_version_4_uuid_new_each_time() -> None:
    ids = [choose_request_id({"headers": []}) for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    for request_id in ids[:200]:
        assert request_id.startswith("req-")
        parsed = uuid.UUID(request_id[4:])
        assert str(parsed) == request_id[4:]
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def _ids_in_child(conn: Connection) -> None:
    conn.send([new_request_id() for _ in range(50)])
    conn.close()


def test_forked_and_spawned_processes_generate_other_ids() -> None:
    new_request_id()  # the parent's generator in use before the children start
    seen = [new_request_id() for _ in range(50)]
    for method in ("fork", "spawn"):
        for _ in range(2):
            parent, child = multiprocessing.get_context(method).Pipe()
            process = multiprocessing.get_context(method).Process(
                target=_ids_in_child, args=(child,)
            )
            process.start()
            seen += parent.recv()
            process.join(timeout=60)
    seen += [new_request_id() for _ in range(50)]
    assert len(set(seen)) == len(seen)
