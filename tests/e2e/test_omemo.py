"""OMEMO (XEP-0384) end to end between two real OMEMO clients: slixmpp with the slixmpp-omemo
plugin, which publishes its device lists and bundles (both `urn:xmpp:omemo:2` and
`eu.siacs.conversations.axolotl`) through personal eventing with publish-options access open,
fetches the other's without any presence subscription between the two, and encrypts; the
other decrypts what the server delivered."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from typing import Any, FrozenSet, Optional

import slixmpp.plugins
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp import JID
from slixmpp.stanza import Message
from slixmpp_omemo import XEP_0384

from clients import CLIENT_NS, STEP, async_test, login, q

A, B = "alice@localhost", "bob@localhost"
TWOMEMO = "urn:xmpp:omemo:2"
OLDMEMO = "eu.siacs.conversations.axolotl"
PUBSUB = "http://jabber.org/protocol/pubsub"


class MemoryStorage(Storage):
    """OMEMO state kept for the test's lifetime only."""

    def __init__(self) -> None:
        super().__init__()
        self._data: dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self._data[key]) if key in self._data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self._data[key] = value

    async def _delete(self, key: str) -> None:
        self._data.pop(key, None)


class OmemoPlugin(XEP_0384):
    """The plugin with in-memory storage, trusting devices on first use (BTBV)."""

    name = "xep_0384"
    default_config = {"fallback_message": "This message is OMEMO encrypted."}

    def plugin_init(self) -> None:
        self._storage = MemoryStorage()
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _devices_blindly_trusted(self, blindly_trusted: FrozenSet[DeviceInformation],
                                       identifier: Optional[str]) -> None:
        pass

    async def _prompt_manual_trust(self, manually_trusted: FrozenSet[DeviceInformation],
                                   identifier: Optional[str]) -> None:
        raise AssertionError(f"unexpected manual trust decision: {manually_trusted}")


slixmpp.plugins.register_plugin(OmemoPlugin)


async def omemo_client(server, user: str):
    """Logs in with OMEMO; returns once the plugin has published its device lists and
    bundles (it fires ``omemo_initialized`` after the uploads were answered)."""
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[Any] = loop.create_future()

    def setup(client) -> None:
        for p in ("xep_0030", "xep_0060", "xep_0115", "xep_0163", "xep_0280", "xep_0334"):
            client.register_plugin(p)
        client.register_plugin("xep_0384")
        client.add_event_handler(
            "omemo_initialized", lambda *_: ready.done() or ready.set_result(True))

    client = await login(server, user, setup=setup)
    await asyncio.wait_for(ready, 60)
    return client


@async_test(timeout=180)
async def test_an_encrypted_message_between_two_omemo_clients(server):
    alice = await omemo_client(server, "alice")
    bob = await omemo_client(server, "bob")

    # What the plugin published is readable by a stranger (no subscription between them).
    reply = await bob.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='{TWOMEMO}:devices'/>"
                                "</pubsub>", to=A)
    assert reply.get("type") == "result", ET.tostring(reply)
    devices = reply.findall(f".//{{{TWOMEMO}}}device")
    assert len(devices) == 1, ET.tostring(reply)
    device_id = devices[0].get("id")
    reply = await bob.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='{TWOMEMO}:bundles'>"
                                f"<item id='{device_id}'/></items></pubsub>", to=A)
    assert reply.find(f".//{{{TWOMEMO}}}bundle/{{{TWOMEMO}}}ik") is not None, ET.tostring(reply)
    # The legacy namespace's device list and its node per device's bundle.
    reply = await bob.iq("get", f"<pubsub xmlns='{PUBSUB}'><items node='{OLDMEMO}.devicelist'/>"
                                "</pubsub>", to=A)
    legacy = reply.findall(f".//{{{OLDMEMO}}}device")
    assert len(legacy) == 1, ET.tostring(reply)
    reply = await bob.iq("get", f"<pubsub xmlns='{PUBSUB}'><items "
                                f"node='{OLDMEMO}.bundles:{legacy[0].get('id')}'/></pubsub>", to=A)
    assert reply.find(f".//{{{OLDMEMO}}}bundle") is not None, ET.tostring(reply)

    omemo = alice.plugin["xep_0384"]
    stanza = alice.make_message(mto=JID(B), mtype="chat")
    stanza["body"] = "the eagle lands at midnight"
    message, errors = await omemo.encrypt_message(stanza, {JID(B)})
    assert not errors, errors
    assert message is not None
    message.send()

    def encrypted(e: ET.Element) -> bool:
        return e.tag == q(CLIENT_NS, "message") and any(
            e.find(f"{{{ns}}}encrypted") is not None for ns in (TWOMEMO, OLDMEMO))

    wire = await bob.expect(encrypted, timeout=STEP, what="an OMEMO message")
    assert "the eagle" not in ET.tostring(wire, "unicode"), "nothing in clear on the wire"
    received = Message(stream=bob, xml=wire)
    bob_omemo = bob.plugin["xep_0384"]
    assert bob_omemo.is_encrypted(received)
    plain, device = await bob_omemo.decrypt_message(received)
    assert plain["body"] == "the eagle lands at midnight"
    assert device.bare_jid == A
