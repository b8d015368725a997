"""SASL (RFC 6120 §6): every SCRAM variant and PLAIN through a real client, what is advertised
(channel-binding -PLUS variants, XEP-0440 channel-binding types, XEP-0478 limits), and how
wrong passwords are answered: ``<not-authorized/>``, slower each time, then disconnection."""

import time

import pytest

from clients import LoginFailed, async_test, login
from conftest import PASSWORD
from raw import SASL_NS, STREAM_NS, RawClient, q

SASL_CB_NS = "urn:xmpp:sasl-cb:0"
LIMITS_NS = "urn:xmpp:stream-limits:0"


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN"])
@pytest.mark.parametrize("direct_tls", [False, True], ids=["starttls", "direct-tls"])
@async_test()
async def test_login_with_mechanism(server, mech, direct_tls):
    client = await login(server, "alice", mech=mech, direct_tls=direct_tls)
    assert client.plugin["feature_mechanisms"].mech.name == mech
    assert str(client.boundjid.bare) == "alice@localhost"
    assert client.boundjid.resource, "no resource bound"
    await client.close()


@pytest.mark.parametrize("mech", ["SCRAM-SHA-1", "SCRAM-SHA-256", "PLAIN"])
@async_test()
async def test_wrong_password_fails(server, mech):
    with pytest.raises(LoginFailed):
        await login(server, "alice", password="not the password", mech=mech)
    with pytest.raises(LoginFailed):
        await login(server, "nobody", mech=mech)
    # The account is not locked by someone else's guessing.
    assert (await login(server, "alice", mech=mech)).boundjid.resource


def tls_stream(server) -> RawClient:
    client = RawClient(server.starttls_port)
    client.open(server.domain)
    client.starttls()
    client.open(server.domain)
    return client


def conditions(element) -> list[str]:
    return [child.tag.split("}", 1)[1] for child in element if not child.tag.endswith("}text")]


def test_mechanisms_and_channel_binding_advertised(server):
    features = tls_stream(server).features
    mechanisms = {m.text for m in features.iter(q(SASL_NS, "mechanism"))}
    for expected in ("SCRAM-SHA-1", "SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN",
                     "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256-PLUS", "SCRAM-SHA-512-PLUS"):
        assert expected in mechanisms, f"{expected} not advertised: {sorted(mechanisms)}"
    cb = features.find(q(SASL_CB_NS, "sasl-channel-binding"))
    assert cb is not None, "no XEP-0440 <sasl-channel-binding/> feature"
    types = {c.get("type") for c in cb.findall(q(SASL_CB_NS, "channel-binding"))}
    # tls-unique does not exist in TLS 1.3 (RFC 9266); tls-exporter must be offered.
    assert "tls-exporter" in types, types


def test_limits_advertised(make_server):
    server = make_server(c2s={"pre_auth_max_stanza_bytes": 6000, "max_stanza_bytes": 70000})
    client = tls_stream(server)
    limits = client.features.find(q(LIMITS_NS, "limits"))
    assert limits is not None, "no XEP-0478 <limits/> before authentication"
    assert int(limits.findtext(q(LIMITS_NS, "max-bytes"))) == 6000
    assert client.auth_plain("alice", PASSWORD).tag == q(SASL_NS, "success")
    features = client.open(server.domain)
    limits = features.find(q(LIMITS_NS, "limits"))
    assert limits is not None, "no XEP-0478 <limits/> after authentication"
    assert int(limits.findtext(q(LIMITS_NS, "max-bytes"))) == 70000


def test_plain_is_not_offered_before_tls(server):
    client = RawClient(server.starttls_port)
    features = client.open(server.domain)
    mechanisms = [m.text for m in features.iter(q(SASL_NS, "mechanism"))]
    assert "PLAIN" not in mechanisms


def test_failure_then_success_on_one_stream(server):
    client = tls_stream(server)
    failure = client.auth_plain("alice", "wrong")
    assert failure.tag == q(SASL_NS, "failure")
    assert conditions(failure) == ["not-authorized"]
    assert client.auth_plain("alice", PASSWORD).tag == q(SASL_NS, "success")


def test_repeated_failures_slow_down_then_disconnect(make_server):
    server = make_server(c2s={"max_auth_failures": 4})
    client = tls_stream(server)
    durations = []
    for _ in range(3):
        started = time.monotonic()
        failure = client.auth_plain("alice", "wrong")
        durations.append(time.monotonic() - started)
        assert failure.tag == q(SASL_NS, "failure")
        assert conditions(failure) == ["not-authorized"]
    assert durations[2] > durations[0] + 0.1, f"no growing delay: {durations}"
    assert durations[1] >= durations[0], f"delay shrank: {durations}"
    # The fourth failure reaches max_auth_failures: the server ends the stream.
    client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                "AGFsaWNlAHdyb25n</auth>")
    assert client.wait_closed(30), "stream still open after max_auth_failures"


def test_malformed_sasl_is_refused(server):
    client = tls_stream(server)
    for bad in ("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                "!!notbase64!!</auth>",
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                "YWxpY2U=</auth>",  # 'alice' with no NULs
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-1'>"
                "eixuPWFsaWNlLHI9</auth>"):  # 'z,n=alice,r=' is not valid SCRAM
        client.send(bad)
        reply = client.next_element()
        if reply.tag == q(STREAM_NS, "error"):
            return  # ending the stream is an acceptable answer to garbage
        assert reply.tag == q(SASL_NS, "failure"), reply.tag
        assert set(conditions(reply)) & {"malformed-request", "incorrect-encoding",
                                          "not-authorized"}, conditions(reply)


def test_unknown_mechanism(server):
    client = tls_stream(server)
    client.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='X-NOPE'/>")
    reply = client.next_element()
    assert reply.tag == q(SASL_NS, "failure")
    assert conditions(reply) == ["invalid-mechanism"]
