//! SASL2 (XEP-0388): the same mechanisms and rules as SASL (`sasl.rs`) in other elements, with
//! what the client asks for besides authentication carried inline in `<authenticate/>` (a
//! resource bound with Bind2, XEP-0386; a session resumed, XEP-0198; a FAST token requested or
//! used, XEP-0484), and no stream restart after success. The inline requests are the driver's
//! work ([`Request::Inline`]); the token check is here, against the token hashes the driver
//! looks up ([`Request::FastTokens`]).

use base64::Engine;
use jid::{BareJid, FullJid};
use minidom::Element;
use xmpp_parsers::fast::{FastQuery, Mechanism as FastMechanism, RequestToken};
use xmpp_parsers::sasl2::{Authentication, InlineFeatures};
use xmppd_address::account_jid;
use xmppd_sasl::ht::{self, HtMechanism, HtResponse};
use xmppd_sasl::Mechanism;
use xmppd_stream::StreamErrorCondition as Cond;

use crate::machine::State;
use crate::role::Role;
use crate::sasl::{decode_sasl, throttle_account, Exchange, Failure};
use crate::xml::text_element;
use crate::{
    features, Action, BackendFailure, Negotiation, Request, NS_BIND2, NS_FAST, NS_SASL, NS_SASL2,
};

const NS_SM: &str = "urn:xmpp:sm:3";

/// The client's `<user-agent/>` (XEP-0388 §2.3.1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserAgent {
    /// Stable per installation; FAST tokens are bound to it.
    pub id: Option<String>,
    pub software: Option<String>,
    pub device: Option<String>,
}

/// A FAST token the client authenticated with (XEP-0484 §3.3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsedToken {
    /// What is stored of the token.
    pub hash: [u8; 32],
    /// The client's `count`, stored so that a replay is refused.
    pub count: Option<u32>,
    /// `<fast invalidate='true'/>`: the token ends with this login.
    pub invalidate: bool,
}

/// A stored, unexpired FAST token of one client, as the driver found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredToken {
    pub hash: [u8; 32],
    /// The highest `count` a login with it carried.
    pub count: Option<u32>,
}

/// What an `<authenticate/>` asked for besides authentication.
#[derive(Debug, Clone, Default)]
pub struct Inline {
    pub user_agent: UserAgent,
    /// Bind2's `<bind xmlns='urn:xmpp:bind:0'/>`.
    pub bind: Option<Element>,
    /// Stream management's `<resume/>`.
    pub resume: Option<Element>,
    /// `<request-token/>`: issue a FAST token for this mechanism.
    pub request_token: Option<HtMechanism>,
    /// Set when the client authenticated with a FAST token.
    pub token: Option<UsedToken>,
    /// `<fast/>`: count and invalidation of the token being used.
    fast: Option<(Option<u32>, bool)>,
}

/// What the driver did with the inline requests.
#[derive(Debug)]
pub enum InlineOutcome {
    /// A session is bound (or resumed) as `jid`: negotiation is complete. `payloads` go into
    /// `<success/>` (`<bound/>`, `<resumed/>`, `<token/>`).
    Bound {
        jid: FullJid,
        payloads: Vec<Element>,
    },
    /// Authenticated without a session yet: the client binds with the usual features.
    Unbound { payloads: Vec<Element> },
}

impl Inline {
    /// Reads the children of `<authenticate/>`: the initial response, if any, and the inline
    /// requests. `Err` is the failure to answer with.
    fn parse(auth: &Element) -> Result<(Option<Vec<u8>>, Inline), Failure> {
        let mut initial = None;
        let mut inline = Inline::default();
        for child in auth.children() {
            match (child.ns().as_str(), child.name()) {
                (NS_SASL2, "initial-response") => match decode_sasl(&child.text()) {
                    Ok(data) => initial = Some(data.unwrap_or_default()),
                    Err(()) => return Err(Failure::before_proof("incorrect-encoding", "base64")),
                },
                // Read by hand: the typed user agent insists on a UUID, which XEP-0388 §2.3.1
                // only recommends.
                (NS_SASL2, "user-agent") => {
                    let text = |name| child.get_child(name, NS_SASL2).map(|c| c.text());
                    inline.user_agent = UserAgent {
                        id: child
                            .attr("id")
                            .filter(|id| !id.is_empty())
                            .map(str::to_owned),
                        software: text("software"),
                        device: text("device"),
                    };
                }
                (NS_BIND2, "bind") => inline.bind = Some(child.clone()),
                (NS_SM, "resume") => inline.resume = Some(child.clone()),
                (NS_FAST, "request-token") => {
                    let mech = RequestToken::try_from(child.clone())
                        .ok()
                        .and_then(|r| HtMechanism::from_name(&r.mechanism));
                    let Some(mech) = mech else {
                        let reason = "request-token names no FAST mechanism we offer";
                        return Err(Failure::before_proof("invalid-mechanism", reason));
                    };
                    inline.request_token = Some(mech);
                }
                // XEP-0484 §3.3: `count` is needed only for TLS 0-RTT, which is not offered.
                (NS_FAST, "fast") => {
                    let count = child.attr("count").and_then(|c| c.parse().ok());
                    let invalidate = matches!(child.attr("invalidate"), Some("true" | "1"));
                    inline.fast = Some((count, invalidate));
                }
                _ => {}
            }
        }
        Ok((initial, inline))
    }
}

/// `<authentication xmlns='urn:xmpp:sasl:2'/>` with `mechs` and the inline features.
pub(crate) fn feature(mechs: &[Mechanism], inline: &[Element], fast: &[HtMechanism]) -> Element {
    let mut payloads = inline.to_vec();
    if !fast.is_empty() {
        let fast = FastQuery {
            tls_0rtt: false,
            mechanisms: fast
                .iter()
                .map(|m| FastMechanism(m.name().into()))
                .collect(),
        };
        payloads.push(fast.into());
    }
    Authentication {
        mechanisms: mechs.iter().map(|m| m.name().to_owned()).collect(),
        inline: Some(InlineFeatures {
            bind2: None,
            sm: None,
            payloads,
        }),
    }
    .into()
}

impl<R: Role> Negotiation<R> {
    /// The FAST mechanisms this stream offers.
    pub(crate) fn fast_offered(&self) -> Vec<HtMechanism> {
        match &self.settings.sasl2 {
            Some(s) if s.fast && self.secure => HtMechanism::offered(&self.bindings),
            _ => Vec::new(),
        }
    }

    /// `<authenticate/>`: the start of a SASL2 exchange.
    pub(crate) fn authenticate(&mut self, auth: &Element, out: &mut Vec<Action<R>>) {
        if self.settings.sasl2.is_none() {
            return self.end(Cond::UnsupportedStanzaType, None, out);
        }
        let (initial, inline) = match Inline::parse(auth) {
            Ok(parsed) => parsed,
            Err(failure) => {
                self.sasl2 = Some(Inline::default());
                return self.fail(None, failure, out);
            }
        };
        self.sasl2 = Some(inline);
        let name = auth.attr("mechanism").unwrap_or_default();
        match HtMechanism::from_name(name) {
            Some(ht) if self.fast_offered().contains(&ht) => self.token_initial(ht, initial, out),
            _ => self.begin(name, Ok(initial), out),
        }
    }

    /// A FAST login: the initial response names the account and proves the token.
    fn token_initial(&mut self, ht: HtMechanism, data: Option<Vec<u8>>, out: &mut Vec<Action<R>>) {
        let mech = Mechanism::Token(ht);
        let (Some(resp), Some(host)) = (data.as_deref().and_then(ht::parse_initial), &self.host)
        else {
            let failure = Failure::before_proof("malformed-request", "not a token response");
            return self.fail(Some(mech), failure, out);
        };
        let account = throttle_account(&resp.authcid, host);
        out.push(Action::Ask(Request::Turn {
            account: account.clone(),
        }));
        self.state = State::Sasl(Exchange::TokenTurn { ht, resp, account });
    }

    /// The throttle's turn came: the client's tokens, bound to its user agent (XEP-0484 §4).
    pub(crate) fn token_turn(
        &mut self,
        ht: HtMechanism,
        resp: HtResponse,
        account: String,
        out: &mut Vec<Action<R>>,
    ) {
        let host = self.host.clone().unwrap_or_default();
        let client = (self.sasl2.as_ref()).and_then(|i| i.user_agent.id.clone());
        let (Some(user), Some(client)) = (account_jid(&resp.authcid, &host), client) else {
            return self.wrong_credentials(Mechanism::Token(ht), account, out);
        };
        out.push(Action::Ask(Request::FastTokens {
            user: user.clone(),
            client,
            mechanism: ht,
        }));
        self.state = State::Sasl(Exchange::Tokens {
            ht,
            user,
            account,
            proof: resp.proof,
        });
    }

    /// The client's tokens are in: one must match the proof, and a `count` must be new.
    pub(crate) fn tokens_found(
        &mut self,
        (ht, user, account, proof): (HtMechanism, BareJid, String, Vec<u8>),
        tokens: Result<Vec<StoredToken>, BackendFailure>,
        out: &mut Vec<Action<R>>,
    ) {
        let mech = Mechanism::Token(ht);
        let tokens = match tokens {
            Ok(tokens) => tokens,
            Err(e) => return self.backend_failure(mech, &e.0, out),
        };
        let Some(cb) = ht.cb_data(&self.bindings) else {
            return self.wrong_credentials(mech, account, out);
        };
        let (count, invalidate) = (self.sasl2.as_ref())
            .and_then(|i| i.fast)
            .unwrap_or((None, false));
        let matching = tokens.iter().find(|t| ht::verify(&t.hash, &cb, &proof));
        // A count no greater than one already seen is a replay (XEP-0484 §3.3).
        let replayed =
            |t: &StoredToken| matches!((t.count, count), (Some(seen), Some(c)) if c <= seen);
        match matching {
            Some(t) if !replayed(t) => {
                let data = ht::responder(&t.hash, &cb);
                if let Some(inline) = self.sasl2.as_mut() {
                    inline.token = Some(UsedToken {
                        hash: t.hash,
                        count,
                        invalidate,
                    });
                }
                self.check_account(user, mech, data, out);
            }
            _ => self.wrong_credentials(mech, account, out),
        }
    }

    /// Authenticated over SASL2: the driver does what was asked inline, then `<success/>`.
    pub(crate) fn sasl2_authenticated(
        &mut self,
        user: BareJid,
        inline: Inline,
        data: Vec<u8>,
        out: &mut Vec<Action<R>>,
    ) {
        out.push(Action::Ask(Request::Inline {
            user: user.clone(),
            inline: Box::new(inline),
        }));
        self.user = Some(user);
        self.state = State::Inline { data };
    }

    /// The inline requests are done: `<success/>`, then the session (bound inline) or the
    /// features to bind one, on the same stream (XEP-0388 §2.6.1: no restart).
    pub(crate) fn inline_done(
        &mut self,
        data: Vec<u8>,
        outcome: InlineOutcome,
        out: &mut Vec<Action<R>>,
    ) {
        let Some(user) = self.user.clone() else {
            return self.end(Cond::InternalServerError, None, out);
        };
        let (jid, payloads) = match &outcome {
            InlineOutcome::Bound { jid, payloads } => (jid.to_string(), payloads),
            InlineOutcome::Unbound { payloads } => (user.to_string(), payloads),
        };
        let mut success = Element::bare("success", NS_SASL2);
        if !data.is_empty() {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&data);
            success.append_child(text_element("additional-data", NS_SASL2, &encoded));
        }
        success.append_child(text_element("authorization-identifier", NS_SASL2, &jid));
        for p in payloads {
            success.append_child(p.clone());
        }
        out.push(Action::Send(success));
        out.push(Action::SetLimits(self.settings.limits));
        match outcome {
            InlineOutcome::Bound { jid, .. } => {
                out.push(Action::Ready(self.role.ready(jid)));
                self.state = State::Done;
            }
            InlineOutcome::Unbound { .. } => {
                let children = self.role.features(&user);
                out.push(Action::Send(features::features(
                    children,
                    &self.settings.limits,
                )));
                self.state = State::Authenticated;
            }
        }
    }
}

/// `<failure xmlns='urn:xmpp:sasl:2'>` with the RFC 6120 condition and, if given, a text.
pub(crate) fn failure(condition: &str, text: Option<&str>) -> Element {
    let mut answer = Element::bare("failure", NS_SASL2);
    answer.append_child(Element::bare(condition, NS_SASL));
    if let Some(text) = text {
        answer.append_child(text_element("text", NS_SASL2, text));
    }
    answer
}
