"""TLS: STARTTLS is mandatory on the STARTTLS listener (RFC 6120 §5.3.1), direct TLS speaks
ALPN ``xmpp-client`` (XEP-0368), old protocol versions are refused, and a replaced
certificate is picked up without a restart."""

import base64
import datetime
import ssl
import time

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients import async_test, login
from conftest import PASSWORD
from raw import SASL_NS, STREAM_NS, TLS_NS, RawClient, q, trust_all_context


def test_features_before_tls_offer_only_starttls(server):
    client = RawClient(server.starttls_port)
    features = client.open(server.domain)
    starttls = features.find(q(TLS_NS, "starttls"))
    assert starttls is not None, "no <starttls/> offered"
    assert starttls.find(q(TLS_NS, "required")) is not None, "STARTTLS not marked <required/>"
    # XEP-0478 limits are information, not something to negotiate, so they may be shown.
    informational = (q(TLS_NS, "starttls"), "{urn:xmpp:stream-limits:0}limits")
    others = [child.tag for child in features if child.tag not in informational]
    assert others == [], f"features other than STARTTLS offered before TLS: {others}"


def test_plaintext_auth_is_refused(server):
    # Correct credentials: only the missing TLS can be the reason for refusing them.
    client = RawClient(server.starttls_port)
    client.open(server.domain)
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    client.send(f"<auth xmlns='{SASL_NS}' mechanism='PLAIN'>{token}</auth>")
    try:
        reply = client.next_element()
    except Exception as exc:  # closing the connection is also a refusal
        reply = None
        assert client.eof or client.reader.closed, f"unexpected {exc!r}"
    if reply is not None:
        assert reply.tag != q(SASL_NS, "success"), "PLAIN accepted over a plaintext stream"
        if reply.tag == q(SASL_NS, "failure"):
            conditions = [c.tag.split("}")[1] for c in reply]
            assert "encryption-required" in conditions or "not-authorized" in conditions, conditions
        else:
            assert reply.tag == q(STREAM_NS, "error"), reply.tag


def test_direct_tls_with_alpn(server):
    client = RawClient(server.direct_tls_port, direct_tls=True,
                       tls_context=trust_all_context(alpn=["xmpp-client"]))
    assert client.sock.selected_alpn_protocol() == "xmpp-client"
    features = client.open(server.domain)
    assert features.find(q(TLS_NS, "starttls")) is None, "STARTTLS offered inside TLS"
    mechanisms = [m.text for m in features.iter(q(SASL_NS, "mechanism"))]
    assert "SCRAM-SHA-256" in mechanisms, mechanisms
    assert client.auth_plain("alice", PASSWORD).tag == q(SASL_NS, "success")


def test_direct_tls_rejects_foreign_alpn(server):
    # XEP-0368 / RFC 7301: a server that only speaks xmpp-client must not agree to another
    # protocol; it either ignores ALPN or fails the handshake with no_application_protocol.
    ctx = trust_all_context(alpn=["http/1.1"])
    try:
        client = RawClient(server.direct_tls_port, direct_tls=True, tls_context=ctx)
    except ssl.SSLError:
        return
    assert client.sock.selected_alpn_protocol() in (None, "xmpp-client")
    client.close()


@async_test()
async def test_slixmpp_over_direct_tls(server):
    alice = await login(server, "alice", direct_tls=True)
    bob = await login(server, "bob")
    alice.chat("bob@localhost", "over direct TLS")
    await bob.expect_message("over direct TLS", "alice@localhost")


@pytest.mark.parametrize("port_kind", ["starttls", "direct"])
@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_1_1_is_refused(server, port_kind):
    if not hasattr(ssl, "TLSVersion"):
        pytest.skip("this Python cannot choose TLS versions")
    ctx = trust_all_context(max_version=ssl.TLSVersion.TLSv1_1,
                            min_version=ssl.TLSVersion.TLSv1)
    try:
        # OpenSSL 3 refuses TLS < 1.2 at security level 1 and above.
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    except ssl.SSLError:
        pytest.skip("this OpenSSL cannot lower its security level for TLS 1.1")
    try:
        if port_kind == "direct":
            RawClient(server.direct_tls_port, direct_tls=True, tls_context=ctx)
        else:
            client = RawClient(server.starttls_port)
            client.open(server.domain)
            client.starttls(ctx)
    except ssl.SSLError as err:
        text = str(err).lower()
        if "no protocols available" in text or "no_protocols_available" in text:
            pytest.skip(f"this OpenSSL cannot offer TLS 1.1: {err}")
        return  # the server refused the handshake
    except (ConnectionResetError, BrokenPipeError):
        return
    pytest.fail("a TLS 1.1 handshake succeeded")


def test_tls_1_2_and_1_3_work(server):
    for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
        ctx = trust_all_context(alpn=["xmpp-client"], min_version=version, max_version=version)
        client = RawClient(server.direct_tls_port, direct_tls=True, tls_context=ctx)
        assert client.sock.version() == version.name.replace("v1_", "v1.")
        client.open(server.domain)
        client.close()


def test_the_server_chooses_aes_128_gcm_over_the_clients_first_choice(server):
    """OpenSSL's client lists AES-256-GCM first; the server's order decides."""
    for version, suite in ((ssl.TLSVersion.TLSv1_3, "TLS_AES_128_GCM_SHA256"),
                           (ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256")):
        ctx = trust_all_context(alpn=["xmpp-client"], min_version=version, max_version=version)
        client = RawClient(server.direct_tls_port, direct_tls=True, tls_context=ctx)
        try:
            assert client.sock.cipher()[0].endswith(suite), client.sock.cipher()
        finally:
            client.close()

# --- session resumption ------------------------------------------------------------------


def _login_keeping_session(server, ctx, *, direct: bool, session=None):
    """Logs alice in with OpenSSL's client (Python's ``ssl``), resuming ``session`` if given;
    returns whether the TLS session was resumed and the session to resume next time. Under
    TLS 1.3 the ticket arrives after the handshake: reading the stream's features reads it."""
    if direct:
        client = RawClient(server.direct_tls_port, direct_tls=True, tls_context=ctx,
                           tls_session=session)
    else:
        client = RawClient(server.starttls_port)
        client.open(server.domain)
        client.starttls(ctx, session=session)
    try:
        assert client.login("alice", PASSWORD, domain=server.domain).startswith("alice@")
        return client.sock.session_reused, client.sock.session
    finally:
        client.close()


@pytest.mark.parametrize("version", ["TLSv1_3", "TLSv1_2"])
@pytest.mark.parametrize("direct", [True, False], ids=["direct", "starttls"])
def test_a_returning_client_resumes_its_tls_session(make_server, version, direct):
    server = make_server()
    tls_version = getattr(ssl.TLSVersion, version)
    ctx = trust_all_context(alpn=["xmpp-client"] if direct else None,
                            min_version=tls_version, max_version=tls_version)
    reused, session = _login_keeping_session(server, ctx, direct=direct)
    assert not reused
    assert session is not None
    reused, session = _login_keeping_session(server, ctx, direct=direct, session=session)
    assert reused, "the second connection did a full handshake"
    # The keys of the tickets live in memory: after a restart the old session is refused and
    # the client falls back to a full handshake, which still logs in.
    server.restart()
    reused, _ = _login_keeping_session(server, ctx, direct=direct, session=session)
    assert not reused


def test_session_resumption_can_be_turned_off(make_server):
    server = make_server(tls={"session_resumption": False})
    for version in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
        ctx = trust_all_context(alpn=["xmpp-client"], min_version=version, max_version=version)
        _, session = _login_keeping_session(server, ctx, direct=True)
        reused, _ = _login_keeping_session(server, ctx, direct=True, session=session)
        assert not reused, version

# --- certificate reload ------------------------------------------------------------------


def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca():
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(_name("xmppd e2e CA")).issuer_name(_name("xmppd e2e CA"))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True,
                                         crl_sign=True, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    return key, cert


def make_leaf(ca_key, ca_cert, domain: str, label: str):
    key = _key()
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domain),
                                     x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME,
                                                        label)]))
            .issuer_name(ca_cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    return key, cert


def write_pair(directory, key, cert) -> None:
    # Written to temporary names and renamed, as a certificate renewal tool does, so the
    # server never reads a half-written file.
    for name, data in (
        ("key.pem", key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())),
        ("cert.pem", cert.public_bytes(serialization.Encoding.PEM)),
    ):
        tmp = directory / (name + ".new")
        tmp.write_bytes(data)
        tmp.replace(directory / name)


def peer_certificate(server, ca_path, *, direct: bool) -> x509.Certificate:
    """Connects with full verification against our CA and returns the served certificate."""
    ctx = ssl.create_default_context(cafile=str(ca_path))
    ctx.set_alpn_protocols(["xmpp-client"])
    if direct:
        client = RawClient(server.direct_tls_port, direct_tls=True, tls_context=ctx)
    else:
        client = RawClient(server.starttls_port)
        client.open(server.domain)
        client.starttls(ctx)
    der = client.sock.getpeercert(binary_form=True)
    client.close()
    return x509.load_der_x509_certificate(der)


def test_certificate_reload(make_server, tmp_path):
    ca_key, ca_cert = make_ca()
    ca_path = tmp_path / "ca.pem"
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_dir = tmp_path / "certs"
    cert_dir.mkdir()
    key1, cert1 = make_leaf(ca_key, ca_cert, "localhost", "first")
    write_pair(cert_dir, key1, cert1)
    server = make_server(tls={
        "reload_interval_secs": 1,
        "certificate": [{"domain": "localhost", "cert": str(cert_dir / "cert.pem"),
                         "key": str(cert_dir / "key.pem")}],
    })
    for direct in (True, False):
        assert peer_certificate(server, ca_path, direct=direct).serial_number == \
            cert1.serial_number

    key2, cert2 = make_leaf(ca_key, ca_cert, "localhost", "second")
    write_pair(cert_dir, key2, cert2)
    deadline = time.monotonic() + 15
    while True:
        served = peer_certificate(server, ca_path, direct=True)
        if served.serial_number == cert2.serial_number:
            break
        assert time.monotonic() < deadline, "new certificate not served 15s after replacement"
        time.sleep(0.5)
    assert peer_certificate(server, ca_path, direct=False).serial_number == \
        cert2.serial_number

    # A broken replacement must not take the server down: it keeps the last good one.
    (cert_dir / "cert.pem").write_text("not a certificate")
    time.sleep(3)
    assert server.running
    assert peer_certificate(server, ca_path, direct=True).serial_number == cert2.serial_number


def test_generated_self_signed_certificate(server):
    tls_dir = server.data_dir / "tls"
    files = sorted(p.name for p in tls_dir.iterdir()) if tls_dir.is_dir() else []
    assert files, f"no generated certificate in {tls_dir}"
    client = RawClient(server.direct_tls_port, direct_tls=True)
    cert = x509.load_der_x509_certificate(client.sock.getpeercert(binary_form=True))
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
