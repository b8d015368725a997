//! Client-to-server connections for xmppd: listeners, TLS, and the per-connection driver.
//!
//! (being written)
