"""Delivered means archived (docs/MAM.md): a message reaches its recipient only once its
archive rows, the sender's and the recipient's, are committed. The server is SIGKILLed while
clients exchange messages as fast as it takes them; after a restart, every message any client
received is in both archives, under the archive id the recipient was given."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from clients import async_test, is_message, login, q
from test_mam import SID, body, fin, query

USERS = ("alice", "bob", "carol")
# Each sender talks to the two others; a few hundred messages each keep the server busy
# well past the moment it is killed.
PAIRS = [(a, b) for a in USERS for b in USERS if a != b]
PER_PAIR = 300


async def archive_of(client) -> dict[str, tuple[str, str, str]]:
    """The whole archive of ``client``'s account: archive id -> (body, from, to), paged
    forward to the end."""
    out: dict[str, tuple[str, str, str]] = {}
    after = ""
    while True:
        reply, results = await query(client, rsm=f"<max>250</max>{after}")
        assert reply.get("type") == "result", ET.tostring(reply, "unicode")
        for archive_id, msg in results:
            out[archive_id] = (body(msg), msg.get("from", ""), msg.get("to", ""))
        if fin(reply).get("complete") == "true" or not results:
            return out
        after = f"<after>{results[-1][0]}</after>"


def bare(jid: str) -> str:
    return jid.split("/", 1)[0]


@async_test(timeout=240.0)
async def test_every_received_message_is_archived_after_kill_9(server):
    clients = {u: await login(server, u) for u in USERS}
    for sender, recipient in PAIRS:
        for i in range(PER_PAIR):
            clients[sender].chat(f"{recipient}@localhost", f"{sender}>{recipient} {i}")
    # Mid-traffic: once bob has received a third of alice's messages (his stanzas are
    # recorded in arrival order, so the others to him are in flight as well).
    mark = f"alice>bob {PER_PAIR // 3}"
    seen = await clients["bob"].expect_message(mark, timeout=120)
    server.kill9()
    received: list[tuple[str, ET.Element]] = [("bob", seen)]
    for user, client in clients.items():
        received += [(user, e) for e in client.received if is_message(e) and body(e)]
        client.kill()
    assert len(received) > PER_PAIR // 3

    server.start()
    archives = {}
    for user in USERS:
        reader = await login(server, user)
        archives[user] = await archive_of(reader)
        await reader.close()
    missing = []
    for user, msg in received:
        text, sender = body(msg), bare(msg.get("from", ""))
        sid = next((s for s in msg.findall(q(SID, "stanza-id"))
                    if s.get("by") == f"{user}@localhost"), None)
        assert sid is not None, ET.tostring(msg, "unicode")
        mine = archives[user].get(sid.get("id"))
        if mine is None or mine[0] != text:
            missing.append(f"{text!r} not in {user}'s archive under {sid.get('id')}")
        theirs = [v for v in archives[sender.split("@")[0]].values() if v[0] == text]
        if len(theirs) != 1:
            missing.append(f"{text!r} in {sender}'s archive {len(theirs)} times")
    assert not missing, f"{len(missing)} of {len(received)} received:\n" + "\n".join(missing[:20])
    # Nothing is archived twice either, whatever the kill interrupted.
    for user, archive in archives.items():
        texts = [v[0] for v in archive.values()]
        assert len(texts) == len(set(texts)), f"{user}: a message archived twice"
