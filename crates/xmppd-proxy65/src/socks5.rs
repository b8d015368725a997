//! The SOCKS5 handshake (RFC 1928) as XEP-0065 §5.3.2 profiles it: the client offers
//! methods, the proxy picks "no authentication"; the client asks to CONNECT to a domain name
//! (ATYP 3) that is the hex SHA-1 of sid, initiator JID and target JID, port 0; the proxy
//! answers success with the same address. Anything else gets the RFC 1928 failure reply and
//! the connection ends.

use sha1::{Digest, Sha1};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const VERSION: u8 = 5;
/// RFC 1928 §3: "NO AUTHENTICATION REQUIRED" and "NO ACCEPTABLE METHODS".
const NO_AUTH: u8 = 0x00;
const NO_ACCEPTABLE: u8 = 0xff;
const CMD_CONNECT: u8 = 0x01;
const ATYP_DOMAIN: u8 = 0x03;
/// The hex SHA-1 the address must be (XEP-0065 §5.3.2).
const ADDR_LEN: usize = 40;

/// RFC 1928 §6 reply codes used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowed = 0x02,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandshakeError {
    /// Not SOCKS version 5.
    Version(u8),
    /// "No authentication" was not among the methods offered.
    NoAcceptableMethod,
    /// A command other than CONNECT.
    Command(u8),
    /// An address that is not a 40-character hex domain name.
    Address,
    /// The connection ended or failed.
    Io(std::io::ErrorKind),
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        HandshakeError::Io(e.kind())
    }
}

impl std::fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HandshakeError::Version(v) => write!(f, "SOCKS version {v}, not 5"),
            HandshakeError::NoAcceptableMethod => f.write_str("no-authentication not offered"),
            HandshakeError::Command(c) => write!(f, "command {c}, not CONNECT"),
            HandshakeError::Address => f.write_str("address is not a hex SHA-1 domain name"),
            HandshakeError::Io(kind) => write!(f, "connection: {kind}"),
        }
    }
}

/// The address both parties of a bytestream connect to (XEP-0065 §5.3.2):
/// SHA1(SID + initiator JID + target JID), lower-case hex.
pub fn dst_addr(sid: &str, initiator: &str, target: &str) -> String {
    let mut h = Sha1::new();
    h.update(sid.as_bytes());
    h.update(initiator.as_bytes());
    h.update(target.as_bytes());
    hex::encode(h.finalize())
}

/// A reply to a CONNECT request: the bound address is the requested domain name (§5.3.2).
fn reply(code: Reply, addr: &[u8]) -> Vec<u8> {
    let mut out = vec![VERSION, code as u8, 0x00, ATYP_DOMAIN, addr.len() as u8];
    out.extend_from_slice(addr);
    out.extend_from_slice(&[0, 0]);
    out
}

/// The reply for a request the proxy refuses before the address is known.
fn failure(code: Reply) -> Vec<u8> {
    vec![VERSION, code as u8, 0x00, 0x01, 0, 0, 0, 0, 0, 0]
}

/// Reads the client's greeting and CONNECT request. On success the address (lower-case hex)
/// is returned and nothing is answered yet: the caller answers [`success`] or [`refuse`]s. On failure the RFC 1928 answer has been written, if one applies.
pub async fn read_request<S>(s: &mut S) -> Result<String, HandshakeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(HandshakeError::Version(head[0]));
    }
    let mut methods = vec![0u8; head[1] as usize];
    s.read_exact(&mut methods).await?;
    if !methods.contains(&NO_AUTH) {
        s.write_all(&[VERSION, NO_ACCEPTABLE]).await?;
        return Err(HandshakeError::NoAcceptableMethod);
    }
    // The method choice and the reply are separate writes: some clients read each as one
    // message (the client must send its request in between anyway).
    s.write_all(&[VERSION, NO_AUTH]).await?;
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await?;
    if req[0] != VERSION {
        return Err(HandshakeError::Version(req[0]));
    }
    if req[1] != CMD_CONNECT {
        s.write_all(&failure(Reply::CommandNotSupported)).await?;
        return Err(HandshakeError::Command(req[1]));
    }
    if req[3] != ATYP_DOMAIN {
        s.write_all(&failure(Reply::AddressTypeNotSupported))
            .await?;
        return Err(HandshakeError::Address);
    }
    let mut len = [0u8; 1];
    s.read_exact(&mut len).await?;
    let mut addr = vec![0u8; len[0] as usize + 2];
    s.read_exact(&mut addr).await?;
    addr.truncate(len[0] as usize);
    if addr.len() != ADDR_LEN || !addr.iter().all(u8::is_ascii_hexdigit) {
        s.write_all(&reply(Reply::GeneralFailure, &addr)).await?;
        return Err(HandshakeError::Address);
    }
    // DST.PORT is 0 (§5.3.2); a client sending another is still talking about this address.
    Ok(String::from_utf8_lossy(&addr).to_ascii_lowercase())
}

/// The success reply for `addr`: the connection is established (§5.3.2).
pub fn success(addr: &str) -> Vec<u8> {
    reply(Reply::Succeeded, addr.as_bytes())
}

/// Answers a failure for `addr` (the proxy is full, or the address is taken).
pub async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, addr: &str, code: Reply) {
    let _ = s.write_all(&reply(code, addr.as_bytes())).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// XEP-0065 §5.3.2's example values, hashed independently (Python's hashlib).
    #[test]
    fn dst_addr_is_hex_sha1_of_sid_initiator_target() {
        let addr = dst_addr(
            "vxf9n471bn46",
            "requester@example.com/foo",
            "target@example.org/bar",
        );
        assert_eq!(addr, "98b8d688d0f5d895fd41c5e7309a2e9e33ba32ff");
    }

    fn connect_request(addr: &[u8]) -> Vec<u8> {
        let mut r = vec![5, 1, 0, 3, addr.len() as u8];
        r.extend_from_slice(addr);
        r.extend_from_slice(&[0, 0]);
        r
    }

    /// Runs the proxy's side against `client` bytes, returning the outcome and what the
    /// proxy wrote.
    async fn handshake(client: &[u8]) -> (Result<String, HandshakeError>, Vec<u8>) {
        let (mut ours, mut theirs) = duplex(1024);
        theirs.write_all(client).await.unwrap();
        // The client closes its side after its bytes: a short request ends in an I/O error
        // rather than a wait.
        theirs.shutdown().await.unwrap();
        let outcome = read_request(&mut ours).await;
        if let Ok(addr) = &outcome {
            ours.write_all(&success(addr)).await.unwrap();
        }
        drop(ours);
        let mut written = Vec::new();
        theirs.read_to_end(&mut written).await.unwrap();
        (outcome, written)
    }

    #[tokio::test]
    async fn no_auth_connect_to_the_hash_succeeds_echoing_the_address() {
        let addr = dst_addr("s", "a@example.org/1", "b@example.org/2");
        let mut client = vec![5, 2, 2, 0]; // username/password and no-auth offered
        client.extend(connect_request(addr.to_uppercase().as_bytes()));
        let (outcome, written) = handshake(&client).await;
        assert_eq!(outcome, Ok(addr.clone()));
        let mut expect = vec![5, 0];
        expect.extend([5, 0, 0, 3, 40]);
        expect.extend(addr.as_bytes());
        expect.extend([0, 0]);
        assert_eq!(written, expect);
    }

    #[tokio::test]
    async fn no_auth_not_offered_gets_no_acceptable_methods() {
        let (outcome, written) = handshake(&[5, 1, 2]).await;
        assert_eq!(outcome, Err(HandshakeError::NoAcceptableMethod));
        assert_eq!(written, [5, 0xff]);
    }

    #[tokio::test]
    async fn other_versions_commands_and_addresses_are_refused() {
        assert_eq!(
            handshake(&[4, 1, 0]).await.0,
            Err(HandshakeError::Version(4))
        );
        // BIND (2) instead of CONNECT.
        let mut bind = vec![5, 1, 0];
        bind.extend([5, 2, 0, 3, 1, b'x', 0, 0]);
        let (outcome, written) = handshake(&bind).await;
        assert_eq!(outcome, Err(HandshakeError::Command(2)));
        assert_eq!(written[2..4], [5, Reply::CommandNotSupported as u8]);
        // An IPv4 address.
        let mut ipv4 = vec![5, 1, 0];
        ipv4.extend([5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
        let (outcome, written) = handshake(&ipv4).await;
        assert_eq!(outcome, Err(HandshakeError::Address));
        assert_eq!(written[2..4], [5, Reply::AddressTypeNotSupported as u8]);
        // A domain name that is not a SHA-1.
        let mut name = vec![5, 1, 0];
        name.extend(connect_request(b"example.org"));
        let (outcome, written) = handshake(&name).await;
        assert_eq!(outcome, Err(HandshakeError::Address));
        assert_eq!(written[2..4], [5, Reply::GeneralFailure as u8]);
        // Cut short.
        let (outcome, _) = handshake(&[5, 1, 0, 5, 1]).await;
        assert!(matches!(outcome, Err(HandshakeError::Io(_))), "{outcome:?}");
    }
}
