"""Server information: service discovery (XEP-0030) on the server and on account JIDs,
ping (XEP-0199), software version (XEP-0092, no OS unless configured), last activity
(XEP-0012), entity capabilities (XEP-0115) and the roster-versioning stream feature."""

import base64
import hashlib

from clients import async_test, login, q, stanza_error
from conftest import PASSWORD
from raw import STREAM_NS, RawClient

DISCO_INFO = "http://jabber.org/protocol/disco#info"
DISCO_ITEMS = "http://jabber.org/protocol/disco#items"
CAPS_NS = "http://jabber.org/protocol/caps"
DATA_NS = "jabber:x:data"


def features_of(reply) -> set[str]:
    return {f.get("var") for f in reply.iter(q(DISCO_INFO, "feature"))}


@async_test()
async def test_server_disco_info_and_items(server):
    alice = await login(server, "alice")
    info = await alice.iq("get", f"<query xmlns='{DISCO_INFO}'/>", to="localhost")
    assert info.get("type") == "result"
    assert info.get("from") == "localhost"
    features = features_of(info)
    for expected in ("urn:xmpp:ping", "jabber:iq:version", "jabber:iq:last", DISCO_INFO):
        assert expected in features, f"{expected} missing from {sorted(features)}"
    identities = [(i.get("category"), i.get("type"))
                  for i in info.iter(q(DISCO_INFO, "identity"))]
    assert ("server", "im") in identities, identities

    items = await alice.iq("get", f"<query xmlns='{DISCO_ITEMS}'/>", to="localhost")
    assert items.get("type") == "result"
    assert items.find(q(DISCO_ITEMS, "query")) is not None


@async_test()
async def test_account_disco_info(server):
    alice = await login(server, "alice")
    info = await alice.iq("get", f"<query xmlns='{DISCO_INFO}'/>", to="alice@localhost")
    assert info.get("type") == "result"
    identities = [(i.get("category"), i.get("type"))
                  for i in info.iter(q(DISCO_INFO, "identity"))]
    assert ("account", "registered") in identities, identities


@async_test()
async def test_disco_unknown_node_is_item_not_found(server):
    alice = await login(server, "alice")
    reply = await alice.iq("get", f"<query xmlns='{DISCO_INFO}' node='no-such-node'/>",
                           to="localhost")
    assert reply.get("type") == "error"


@async_test()
async def test_ping(server):
    alice = await login(server, "alice")
    reply = await alice.iq("get", "<ping xmlns='urn:xmpp:ping'/>", to="localhost")
    assert reply.get("type") == "result"
    # An unknown payload to the server is answered with an error, not silence or a result.
    reply = await alice.iq("get", "<nonsense xmlns='urn:example:nonsense'/>", to="localhost")
    assert reply.get("type") == "error"
    assert stanza_error(reply) in ("service-unavailable", "feature-not-implemented")


@async_test()
async def test_version_hides_os_by_default(server):
    alice = await login(server, "alice")
    reply = await alice.iq("get", "<query xmlns='jabber:iq:version'/>", to="localhost")
    assert reply.get("type") == "result"
    query = reply.find(q("jabber:iq:version", "query"))
    assert query.findtext(q("jabber:iq:version", "name"))
    assert query.findtext(q("jabber:iq:version", "version"))
    assert query.find(q("jabber:iq:version", "os")) is None, "OS disclosed without show_os"


@async_test()
async def test_version_shows_os_when_configured(make_server):
    server = make_server(server={"show_os": True})
    alice = await login(server, "alice")
    reply = await alice.iq("get", "<query xmlns='jabber:iq:version'/>", to="localhost")
    assert reply.find(q("jabber:iq:version", "query")).findtext(q("jabber:iq:version", "os"))


@async_test()
async def test_last_activity_of_server_is_uptime(server):
    alice = await login(server, "alice")
    reply = await alice.iq("get", "<query xmlns='jabber:iq:last'/>", to="localhost")
    assert reply.get("type") == "result"
    seconds = int(reply.find(q("jabber:iq:last", "query")).get("seconds"))
    assert 0 <= seconds < 600, seconds


def caps_ver(info) -> str:
    """XEP-0115 §5.1 verification string from a disco#info result."""
    query = info.find(q(DISCO_INFO, "query"))
    identities = sorted(
        (i.get("category") or "", i.get("type") or "",
         i.get("{http://www.w3.org/XML/1998/namespace}lang") or "", i.get("name") or "")
        for i in query.findall(q(DISCO_INFO, "identity")))
    text = "".join("/".join(i) + "<" for i in identities)
    text += "".join(f + "<" for f in sorted(features_of(query)))
    forms = []
    for form in query.findall(q(DATA_NS, "x")):
        fields = {}
        for field in form.findall(q(DATA_NS, "field")):
            values = field.findall(q(DATA_NS, "value"))
            fields[field.get("var")] = sorted(v.text or "" for v in values)
        form_type = fields.pop("FORM_TYPE", [""])[0]
        part = form_type + "<"
        for var in sorted(fields):
            part += var + "<" + "".join(v + "<" for v in fields[var])
        forms.append((form_type, part))
    text += "".join(part for _, part in sorted(forms))
    return base64.b64encode(hashlib.sha1(text.encode()).digest()).decode()


@async_test()
async def test_caps_and_rosterver_stream_features(server):
    client = RawClient(server.starttls_port)
    client.open(server.domain)
    client.starttls()
    pre_auth = client.open(server.domain)
    assert client.auth_plain("alice", PASSWORD).tag.endswith("success")
    post_auth = client.open(server.domain)
    assert post_auth.tag == q(STREAM_NS, "features")
    assert post_auth.find(q("urn:xmpp:features:rosterver", "ver")) is not None, \
        "roster versioning not advertised"
    caps = post_auth.find(q(CAPS_NS, "c"))
    if caps is None:
        caps = pre_auth.find(q(CAPS_NS, "c"))
    assert caps is not None, "no entity capabilities in stream features"
    assert caps.get("hash") == "sha-1" and caps.get("node"), caps.attrib
    client.bind()
    info = client.iq("get", f"<query xmlns='{DISCO_INFO}' node='{caps.get('node')}#"
                            f"{caps.get('ver')}'/>", to="localhost")
    assert info.get("type") == "result", "caps node#ver not answered"
    assert caps_ver(info) == caps.get("ver"), "caps ver does not match the disco#info"


SERVER_INFO = "http://jabber.org/network/serverinfo"


@async_test()
async def test_contact_addresses_in_disco_info_and_caps(make_server):
    """XEP-0157: the configured addresses as the serverinfo form of the host's disco#info,
    read with slixmpp's extended disco (XEP-0128), and counted in the caps hash."""
    server = make_server(contact=[{
        "host": "localhost",
        "abuse": ["mailto:abuse@localhost", "xmpp:abuse@localhost"],
        "status": ["https://status.localhost/"],
        "security": ["mailto:security@localhost"],
    }])

    def plugins(client) -> None:
        client.register_plugin("xep_0030")
        client.register_plugin("xep_0128")

    alice = await login(server, "alice", setup=plugins)
    info = await alice.plugin["xep_0030"].get_info(jid="localhost", timeout=10)
    forms = [f for f in info["disco_info"]["substanzas"]
             if f.name == "x" and f.get_values().get("FORM_TYPE") in (SERVER_INFO, [SERVER_INFO])]
    assert len(forms) == 1, f"one serverinfo form expected in {info}"
    values = forms[0].get_values()
    assert sorted(values["abuse-addresses"]) == ["mailto:abuse@localhost", "xmpp:abuse@localhost"]
    assert values["status-addresses"] == ["https://status.localhost/"]
    assert values["security-addresses"] == ["mailto:security@localhost"]
    assert "sales-addresses" not in values, "a kind without addresses is left out"
    fields = {f["var"]: f["type"] for f in forms[0]["fields"]}
    assert fields["abuse-addresses"] == "list-multi", fields
    assert forms[0]["type"] == "result"

    # The stream feature's caps hash covers the form (XEP-0115 §5.4).
    client = RawClient(server.starttls_port)
    client.open(server.domain)
    client.starttls()
    client.open(server.domain)
    assert client.auth_plain("alice", PASSWORD).tag.endswith("success")
    caps = client.open(server.domain).find(q(CAPS_NS, "c"))
    client.bind()
    raw = client.iq("get", f"<query xmlns='{DISCO_INFO}' node='{caps.get('node')}#"
                           f"{caps.get('ver')}'/>", to="localhost")
    assert raw.get("type") == "result", "caps node#ver not answered"
    assert raw.find(q(DISCO_INFO, "query")).find(q(DATA_NS, "x")) is not None
    assert caps_ver(raw) == caps.get("ver"), "caps ver does not cover the contact form"
