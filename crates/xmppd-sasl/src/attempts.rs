//! What one stream remembers across its SASL attempts: how many failures count toward the
//! stream's limit, and whether a `y` GS2 flag is believable.
//!
//! RFC 6120 §6.4.5 lets a client retry, and clients do so mechanism by mechanism. An attempt
//! that fails before any proof was checked (an unsupported channel-binding type, a malformed
//! first message, an unknown mechanism) guessed no password, so it does not count toward the
//! limit, up to [`UNCOUNTED_BEFORE_PROOF`] such attempts per stream; past that, every failure
//! counts, so a stream cannot loop forever. Failures at or after a proof always count.
//!
//! A client that can bind only with a type this server lacks (`tls-unique` under TLS 1.3,
//! RFC 9266 §3) tries each `-PLUS` mechanism, is refused, then falls back with `y` (RFC 5802
//! §6). Once such a refusal happened on the stream, [`Attempts::y_flag_explained`] is true and
//! the caller builds its [`crate::ScramServer`] with [`crate::ScramServer::accept_y_flag`].

use crate::{Mechanism, SaslError};

/// Failures before any proof that a stream gets for free: enough for a client to walk through
/// every advertised mechanism once.
pub const UNCOUNTED_BEFORE_PROOF: u32 = 8;

/// Where in an exchange an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// No credential was checked: nothing was guessed.
    BeforeProof,
    /// A password or proof was checked (or the account refused after it).
    Proof,
}

/// Per-stream SASL attempt bookkeeping.
#[derive(Debug, Clone)]
pub struct Attempts {
    max_failures: u32,
    counted: u32,
    uncounted: u32,
    y_flag_explained: bool,
}

impl Attempts {
    /// `max_failures` counted failures end the stream (at least one).
    pub fn new(max_failures: u32) -> Self {
        Attempts {
            max_failures: max_failures.max(1),
            counted: 0,
            uncounted: 0,
            y_flag_explained: false,
        }
    }

    /// Records a failed attempt with `mech` (if it named a known one) at `stage`; `error` is
    /// the reason when the SASL layer gave one. Returns true when the stream must end.
    pub fn fail(
        &mut self,
        mech: Option<Mechanism>,
        stage: Stage,
        error: Option<&SaslError>,
    ) -> bool {
        if matches!(mech, Some(Mechanism::Scram { plus: true, .. }))
            && matches!(error, Some(SaslError::UnsupportedChannelBinding(_)))
        {
            self.y_flag_explained = true;
        }
        if stage == Stage::BeforeProof && self.uncounted < UNCOUNTED_BEFORE_PROOF {
            self.uncounted += 1;
            return false;
        }
        self.counted += 1;
        self.counted >= self.max_failures
    }

    /// Whether a `-PLUS` attempt on this stream was refused for its channel-binding type, so
    /// that a `y` flag is accepted from now on.
    pub fn y_flag_explained(&self) -> bool {
        self.y_flag_explained
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HashAlg;

    const PLUS: Mechanism = Mechanism::Scram {
        alg: HashAlg::Sha256,
        plus: true,
    };
    const NON_PLUS: Mechanism = Mechanism::Scram {
        alg: HashAlg::Sha256,
        plus: false,
    };

    fn unsupported() -> SaslError {
        SaslError::UnsupportedChannelBinding("tls-unique".into())
    }

    #[test]
    fn failures_before_proof_are_free_up_to_the_cap() {
        let mut a = Attempts::new(1);
        let malformed = SaslError::MalformedRequest("missing nonce".into());
        for _ in 0..UNCOUNTED_BEFORE_PROOF {
            assert!(!a.fail(Some(NON_PLUS), Stage::BeforeProof, Some(&malformed)));
        }
        assert!(
            a.fail(Some(NON_PLUS), Stage::BeforeProof, Some(&malformed)),
            "past the cap they count like any failure"
        );
    }

    #[test]
    fn failures_at_the_proof_always_count() {
        let mut a = Attempts::new(3);
        assert!(!a.fail(Some(NON_PLUS), Stage::Proof, None));
        assert!(
            !a.fail(None, Stage::BeforeProof, None),
            "free, between counted ones"
        );
        assert!(!a.fail(Some(Mechanism::Plain), Stage::Proof, None));
        assert!(a.fail(
            Some(NON_PLUS),
            Stage::Proof,
            Some(&SaslError::NotAuthorized)
        ));
    }

    #[test]
    fn y_flag_is_explained_only_by_a_refused_plus_binding_type() {
        let mut a = Attempts::new(3);
        assert!(!a.y_flag_explained());
        a.fail(Some(NON_PLUS), Stage::BeforeProof, Some(&unsupported()));
        assert!(!a.y_flag_explained(), "not a -PLUS attempt");
        let downgrade = SaslError::ChannelBinding("downgrade detected ('y' flag)".into());
        a.fail(Some(NON_PLUS), Stage::BeforeProof, Some(&downgrade));
        a.fail(
            Some(PLUS),
            Stage::BeforeProof,
            Some(&SaslError::MalformedRequest("x".into())),
        );
        a.fail(
            Some(PLUS),
            Stage::Proof,
            Some(&SaslError::ChannelBinding("mismatch".into())),
        );
        assert!(!a.y_flag_explained(), "no binding type was refused");
        a.fail(Some(PLUS), Stage::BeforeProof, Some(&unsupported()));
        assert!(a.y_flag_explained());
    }

    #[test]
    fn three_plus_refusals_leave_room_for_the_fallback() {
        // The sequence of a client that binds only with tls-unique, under TLS 1.3.
        let mut a = Attempts::new(1);
        for _ in 0..3 {
            assert!(!a.fail(Some(PLUS), Stage::BeforeProof, Some(&unsupported())));
        }
        assert!(a.y_flag_explained());
        assert!(a.fail(
            Some(NON_PLUS),
            Stage::Proof,
            Some(&SaslError::NotAuthorized)
        ));
    }
}
