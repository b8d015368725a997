//! The SOCKS5 bytestreams proxy (XEP-0065 §6, mediated connections), a component on
//! `proxy.HOST` in front of one TCP listener shared by every host.
//!
//! - `component.rs`: [`Proxy65`], the component: its disco#info (`proxy/bytestreams`), the
//!   streamhost query (§6.3.1, the configured public address) and activation (§6.3.4).
//!   Only allowed entities (the users of the served hosts unless configured otherwise) get
//!   an address or an activation, so the proxy is never an open relay.
//! - `socks5.rs`: the SOCKS5 handshake as XEP-0065 §5.3.2 profiles RFC 1928: no
//!   authentication, CONNECT to a domain name that is the hex SHA-1 of sid, initiator and
//!   target, port 0.
//! - `relay.rs`: [`Relay`], the listener and the pairings: two connections with the same
//!   address wait for the initiator's activation, then their bytes are relayed both ways,
//!   paced (`pacer.rs`) per transfer and in total; limits on concurrent transfers, the time
//!   to pair and activate, and idleness.
//! - `payload.rs`: the `http://jabber.org/protocol/bytestreams` query (xso derives:
//!   xmpp-parsers has no XEP-0065).

mod component;
mod pacer;
pub mod payload;
mod relay;
pub mod socks5;

pub use component::{Allow, Proxy65};
pub use pacer::{Bucket, Pacer};
pub use relay::{ActivateError, Relay, RelaySettings};
