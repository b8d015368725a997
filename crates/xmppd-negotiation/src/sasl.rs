//! One SASL exchange (RFC 6120 §6) as states of the machine: the mechanism choice, the
//! throttle's turn, the credential check through the driver, the answers, and what each
//! failure costs the stream (`xmppd_sasl::Attempts`).

use std::borrow::Cow;

use base64::Engine;
use jid::BareJid;
use minidom::Element;
use xmppd_address::{account_jid, parse_jid};
use xmppd_sasl::{
    ClientFirst, HashAlg, Mechanism, PlainCredentials, SaslError, ScramServer, Stage,
};
use xmppd_stream::StreamErrorCondition as Cond;

use crate::machine::{unexpected, State};
use crate::role::Role;
use crate::xml::text_element;
use crate::{Action, Event, Negotiation, Request, NS_SASL, NS_SASL2};
use xmppd_sasl::ht::{HtMechanism, HtResponse};

/// Where an exchange waits.
#[derive(Debug)]
pub(crate) enum Exchange {
    /// The `<response/>` carrying the initial response, after an empty challenge.
    Initial { mech: Mechanism },
    /// The throttle's turn for a PLAIN attempt.
    PlainTurn {
        creds: PlainCredentials,
        account: String,
    },
    /// The backend's verdict on a password.
    Password { user: BareJid, account: String },
    /// The throttle's turn for a SCRAM attempt.
    ScramTurn(Box<Scram>, ClientFirst),
    /// The account's SCRAM keys.
    Keys(Box<Scram>, BareJid),
    /// The client's final message.
    Final(Box<Scram>, Option<BareJid>, bool),
    /// Whether the proven account may log in; then `<success/>` with this data.
    Account {
        user: BareJid,
        mech: Mechanism,
        data: Vec<u8>,
    },
    /// The throttle's delay before a wrong credential is answered.
    Backoff(Option<Mechanism>, Failure),
    /// The throttle's turn for a FAST token (SASL2 only).
    TokenTurn {
        ht: HtMechanism,
        resp: HtResponse,
        account: String,
    },
    /// The client's stored tokens.
    Tokens {
        ht: HtMechanism,
        user: BareJid,
        account: String,
        proof: Vec<u8>,
    },
}

/// A SCRAM exchange in progress.
#[derive(Debug)]
pub(crate) struct Scram {
    server: ScramServer,
    mech: Mechanism,
    alg: HashAlg,
    /// What the attempt is throttled under.
    account: String,
}

/// One failed attempt, as it is answered, logged and counted.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The RFC 6120 §6.5 condition.
    condition: &'static str,
    /// Why, for the log and (before any proof) the client.
    reason: Cow<'static, str>,
    stage: Stage,
    /// The SASL layer's error, when it gave one: it tells a refused binding type apart.
    error: Option<SaslError>,
}

impl Failure {
    pub(crate) fn before_proof(
        condition: &'static str,
        reason: impl Into<Cow<'static, str>>,
    ) -> Self {
        Failure {
            condition,
            reason: reason.into(),
            stage: Stage::BeforeProof,
            error: None,
        }
    }

    fn proof(condition: &'static str, reason: impl Into<Cow<'static, str>>) -> Self {
        Failure {
            stage: Stage::Proof,
            ..Failure::before_proof(condition, reason)
        }
    }

    /// A failure the SASL layer reported before any proof was checked.
    fn from_sasl(e: &SaslError) -> Self {
        Failure {
            error: Some(e.clone()),
            ..Failure::before_proof(e.condition(), e.to_string())
        }
    }
}

/// What a `<response/>` or `<abort/>` inside an exchange carried.
enum Reply {
    Data(Vec<u8>),
    Failed(Failure),
}

impl<R: Role> Negotiation<R> {
    /// `<auth/>`: the start of an exchange.
    pub(crate) fn auth(&mut self, auth: &Element, out: &mut Vec<Action<R>>) {
        let name = auth.attr("mechanism").unwrap_or_default();
        self.begin(name, decode_sasl(&auth.text()), out)
    }

    /// The start of an exchange (SASL or SASL2) with mechanism `name` and the initial
    /// response, if any (`Err` when it was not valid base64).
    pub(crate) fn begin(
        &mut self,
        name: &str,
        initial: Result<Option<Vec<u8>>, ()>,
        out: &mut Vec<Action<R>>,
    ) {
        let mech = match Mechanism::from_name(name) {
            Some(Mechanism::Plain) if !self.secure => {
                let failure = Failure::before_proof("encryption-required", "PLAIN needs TLS");
                return self.fail(Some(Mechanism::Plain), failure, out);
            }
            Some(m) if self.offered.contains(&m) => m,
            _ => {
                let reason = format!("mechanism {name:?} is not offered on this stream");
                let failure = Failure::before_proof("invalid-mechanism", reason);
                return self.fail(None, failure, out);
            }
        };
        match initial {
            Ok(Some(data)) => self.initial(mech, data, out),
            // No initial response: ask for it with an empty challenge.
            Ok(None) => {
                out.push(Action::Send(self.sasl_element("challenge", &[])));
                self.state = State::Sasl(Exchange::Initial { mech });
            }
            Err(()) => self.fail(Some(mech), bad_encoding(), out),
        }
    }

    /// The next step of the exchange waiting in `exchange`.
    pub(crate) fn sasl(&mut self, exchange: Exchange, event: Event<R>, out: &mut Vec<Action<R>>) {
        match (exchange, event) {
            (Exchange::Initial { mech }, Event::Element(el)) => match response(&el, self.sasl_ns())
            {
                Ok(Reply::Data(data)) => self.initial(mech, data, out),
                Ok(Reply::Failed(failure)) => self.fail(Some(mech), failure, out),
                Err(cond) => self.end(cond, None, out),
            },
            (Exchange::PlainTurn { creds, account }, Event::Waited) => {
                self.plain_checked_turn(creds, account, out)
            }
            (Exchange::Password { user, account }, Event::PasswordChecked(verdict)) => {
                match verdict {
                    Ok(true) => self.check_account(user, Mechanism::Plain, Vec::new(), out),
                    Ok(false) => self.wrong_credentials(Mechanism::Plain, account, out),
                    Err(e) => self.backend_failure(Mechanism::Plain, &e.0, out),
                }
            }
            (Exchange::ScramTurn(scram, first), Event::Waited) => {
                self.scram_checked_turn(scram, first, out)
            }
            (Exchange::Keys(mut scram, user), Event::ScramKeys(keys)) => match keys {
                Ok(keys) => {
                    let server_first = scram.server.server_first(keys.as_ref());
                    out.push(Action::Send(self.sasl_element("challenge", &server_first)));
                    let keyed = keys.is_some();
                    self.state = State::Sasl(Exchange::Final(scram, Some(user), keyed));
                }
                Err(e) => self.backend_failure(scram.mech, &e.0, out),
            },
            (Exchange::Final(scram, user, keyed), Event::Element(el)) => {
                match response(&el, self.sasl_ns()) {
                    Ok(Reply::Data(data)) => self.scram_final(*scram, user, keyed, &data, out),
                    Ok(Reply::Failed(failure)) => self.fail(Some(scram.mech), failure, out),
                    Err(cond) => self.end(cond, None, out),
                }
            }
            (Exchange::Account { user, mech, data }, Event::AccountChecked { enabled }) => {
                if enabled {
                    self.authenticated(user, mech, data, out);
                } else {
                    let failure = Failure::proof("account-disabled", "account disabled");
                    self.fail(Some(mech), failure, out);
                }
            }
            (Exchange::Backoff(mech, failure), Event::Waited) => self.fail(mech, failure, out),
            (Exchange::TokenTurn { ht, resp, account }, Event::Waited) => {
                self.token_turn(ht, resp, account, out)
            }
            (
                Exchange::Tokens {
                    ht,
                    user,
                    account,
                    proof,
                },
                Event::FastTokens(tokens),
            ) => self.tokens_found((ht, user, account, proof), tokens, out),
            (Exchange::Initial { .. } | Exchange::Final(..), Event::StreamOpened(_)) => {
                self.end(Cond::NotWellFormed, None, out)
            }
            (exchange, event) => {
                tracing::error!(?exchange, ?event, "SASL event out of order");
                self.end(Cond::InternalServerError, None, out);
            }
        }
    }

    /// The initial response is in: parse it and wait for the throttle's turn.
    fn initial(&mut self, mech: Mechanism, data: Vec<u8>, out: &mut Vec<Action<R>>) {
        let Some(host) = self.host.clone() else {
            return self.end(Cond::InternalServerError, None, out);
        };
        match mech {
            Mechanism::Plain => {
                let mut creds = match xmppd_sasl::parse_plain(&data) {
                    Ok(c) => c,
                    Err(e) => return self.fail(Some(mech), Failure::from_sasl(&e), out),
                };
                if let Some(policy) = self.settings.host(&host) {
                    let name = without_suffix(&creds.authcid, &policy.login_suffixes);
                    creds.authcid = name.to_owned();
                }
                let account = throttle_account(&creds.authcid, &host);
                out.push(Action::Ask(Request::Turn {
                    account: account.clone(),
                }));
                self.state = State::Sasl(Exchange::PlainTurn { creds, account });
            }
            Mechanism::Scram { alg, .. } => {
                let cb_offered = self.bindings.available();
                let mut server =
                    ScramServer::new(mech, self.bindings.clone(), &self.offered, &cb_offered);
                if self.attempts.y_flag_explained() {
                    server = server.accept_y_flag();
                }
                let first = match server.client_first(&data) {
                    Ok(first) => first,
                    Err(e) => return self.fail(Some(mech), Failure::from_sasl(&e), out),
                };
                let account = throttle_account(&first.authcid, &host);
                out.push(Action::Ask(Request::Turn {
                    account: account.clone(),
                }));
                let scram = Scram {
                    server,
                    mech,
                    alg,
                    account,
                };
                self.state = State::Sasl(Exchange::ScramTurn(Box::new(scram), first));
            }
            Mechanism::External | Mechanism::Token(_) => {
                let failure = Failure::before_proof("invalid-mechanism", "EXTERNAL is not offered");
                self.fail(Some(mech), failure, out)
            }
        }
    }

    fn plain_checked_turn(
        &mut self,
        creds: PlainCredentials,
        account: String,
        out: &mut Vec<Action<R>>,
    ) {
        let host = self.host.clone().unwrap_or_default();
        let Some(user) = account_jid(&creds.authcid, &host) else {
            return self.wrong_credentials(Mechanism::Plain, account, out);
        };
        if !authzid_matches(creds.authzid.as_deref(), Some(&user)) {
            let failure = Failure::before_proof("invalid-authzid", "authzid names another account");
            return self.fail(Some(Mechanism::Plain), failure, out);
        }
        out.push(Action::Ask(Request::CheckPassword {
            user: user.clone(),
            password: creds.password,
        }));
        self.state = State::Sasl(Exchange::Password { user, account });
    }

    fn scram_checked_turn(
        &mut self,
        mut scram: Box<Scram>,
        first: ClientFirst,
        out: &mut Vec<Action<R>>,
    ) {
        let host = self.host.clone().unwrap_or_default();
        let user = account_jid(&first.authcid, &host);
        if !authzid_matches(first.authzid.as_deref(), user.as_ref()) {
            let failure = Failure::before_proof("invalid-authzid", "authzid names another account");
            return self.fail(Some(scram.mech), failure, out);
        }
        match user {
            Some(user) => {
                out.push(Action::Ask(Request::ScramKeys {
                    user: user.clone(),
                    alg: scram.alg,
                }));
                self.state = State::Sasl(Exchange::Keys(scram, user));
            }
            // An invalid name continues with fake keys and fails at the proof, so the
            // exchange does not reveal which accounts exist.
            None => {
                let server_first = scram.server.server_first(None);
                out.push(Action::Send(self.sasl_element("challenge", &server_first)));
                self.state = State::Sasl(Exchange::Final(scram, None, false));
            }
        }
    }

    fn scram_final(
        &mut self,
        mut scram: Scram,
        user: Option<BareJid>,
        keyed: bool,
        client_final: &[u8],
        out: &mut Vec<Action<R>>,
    ) {
        let mech = scram.mech;
        match (scram.server.client_final(client_final), user) {
            (Ok(server_final), Some(user)) if keyed => {
                self.check_account(user, mech, server_final, out)
            }
            (Ok(_), _) | (Err(SaslError::NotAuthorized), _) => {
                self.wrong_credentials(mech, scram.account, out)
            }
            (Err(e), _) => {
                let failure = Failure {
                    stage: Stage::Proof,
                    ..Failure::from_sasl(&e)
                };
                self.fail(Some(mech), failure, out)
            }
        }
    }

    /// The proof was right: a disabled account is still refused.
    pub(crate) fn check_account(
        &mut self,
        user: BareJid,
        mech: Mechanism,
        data: Vec<u8>,
        out: &mut Vec<Action<R>>,
    ) {
        out.push(Action::Ask(Request::CheckAccount { user: user.clone() }));
        self.state = State::Sasl(Exchange::Account { user, mech, data });
    }

    /// A wrong credential is counted by the throttle, which may delay the answer.
    pub(crate) fn wrong_credentials(
        &mut self,
        mech: Mechanism,
        account: String,
        out: &mut Vec<Action<R>>,
    ) {
        let failure = Failure::proof(
            "not-authorized",
            format!("wrong credentials for {account:?}"),
        );
        out.push(Action::Ask(Request::Backoff { account }));
        self.state = State::Sasl(Exchange::Backoff(Some(mech), failure));
    }

    pub(crate) fn backend_failure(
        &mut self,
        mech: Mechanism,
        error: &str,
        out: &mut Vec<Action<R>>,
    ) {
        tracing::warn!(error, "authentication backend failed");
        let failure = Failure::proof("temporary-auth-failure", "authentication backend failed");
        self.fail(Some(mech), failure, out)
    }

    /// Answers and logs one failed attempt (RFC 6120 §6.4.5); too many counted failures on
    /// one stream end it. A failure before any proof names its reason in `<text/>`, so that
    /// the client can choose differently; after a proof it says no more than the condition.
    pub(crate) fn fail(
        &mut self,
        mech: Option<Mechanism>,
        failure: Failure,
        out: &mut Vec<Action<R>>,
    ) {
        tracing::info!(
            mech = mech.map_or("(none)", Mechanism::name),
            reason = %failure.reason,
            condition = failure.condition,
            "authentication failed"
        );
        xmppd_metrics::auth(mech.map(Mechanism::name), false);
        let answer = if self.sasl2.take().is_some() {
            let text = (failure.stage == Stage::BeforeProof).then_some(&*failure.reason);
            crate::sasl2::failure(failure.condition, text)
        } else {
            self.sasl1_failure(&failure)
        };
        out.push(Action::Send(answer));
        self.state = State::PreAuth;
        if self
            .attempts
            .fail(mech, failure.stage, failure.error.as_ref())
        {
            let text = "too many authentication failures".to_owned();
            self.end(Cond::PolicyViolation, Some(text), out);
        }
    }

    fn sasl1_failure(&self, failure: &Failure) -> Element {
        let mut answer = Element::bare("failure", NS_SASL);
        answer.append_child(Element::bare(failure.condition, NS_SASL));
        if failure.stage == Stage::BeforeProof {
            let mut text = text_element("text", NS_SASL, &failure.reason);
            text.attrs_mut().insert(
                rxml::Namespace::XML,
                rxml::NcName::try_from("lang").expect("a valid name"),
                "en".to_owned(),
            );
            answer.append_child(text);
        }
        answer
    }

    /// The namespace of this exchange's elements.
    fn sasl_ns(&self) -> &'static str {
        if self.sasl2.is_some() {
            NS_SASL2
        } else {
            NS_SASL
        }
    }

    /// `<name/>` of this exchange's profile carrying `data` in base64, empty for no data.
    fn sasl_element(&self, name: &str, data: &[u8]) -> Element {
        sasl_element(name, self.sasl_ns(), data)
    }
}

fn bad_encoding() -> Failure {
    Failure::before_proof("incorrect-encoding", "invalid base64")
}

/// A `<response/>` or `<abort/>` inside an exchange; anything else ends the stream.
fn response(el: &Element, ns: &str) -> Result<Reply, Cond> {
    if el.is("response", ns) {
        return Ok(match decode_sasl(&el.text()) {
            Ok(data) => Reply::Data(data.unwrap_or_default()),
            Err(()) => Reply::Failed(bad_encoding()),
        });
    }
    if el.is("abort", ns) {
        let failure = Failure::before_proof("aborted", "aborted by the client");
        return Ok(Reply::Failed(failure));
    }
    Err(unexpected(el))
}

/// `<name xmlns=sasl>base64</name>`, empty for no data.
fn sasl_element(name: &str, ns: &str, data: &[u8]) -> Element {
    if data.is_empty() {
        return Element::bare(name, ns);
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(data);
    text_element(name, ns, &encoded)
}

/// RFC 6120 §6.4.6 `<success/>`, carrying the mechanism's additional data.
pub(crate) fn success(data: &[u8]) -> Element {
    sasl_element("success", NS_SASL, data)
}

/// SASL payload: `None` for no data, `Some(empty)` for `=`, else base64 (whitespace ignored).
pub(crate) fn decode_sasl(text: &str) -> Result<Option<Vec<u8>>, ()> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    match compact.as_str() {
        "" => Ok(None),
        "=" => Ok(Some(Vec::new())),
        b64 => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map(Some)
            .map_err(|_| ()),
    }
}

/// `authcid` less an `@suffix` of `suffixes` (compared ignoring ASCII case), else as it is.
fn without_suffix<'a>(authcid: &'a str, suffixes: &[String]) -> &'a str {
    match authcid.rsplit_once('@') {
        Some((name, suffix)) if suffixes.iter().any(|s| s.eq_ignore_ascii_case(suffix)) => name,
        _ => authcid,
    }
}

/// The account an attempt is throttled under: the normalised JID when the authcid is a valid
/// localpart, else the authcid itself (so invalid names are throttled too).
pub(crate) fn throttle_account(authcid: &str, host: &str) -> String {
    account_jid(authcid, host).map_or_else(|| authcid.to_owned(), |jid| jid.to_string())
}

/// An authzid is accepted only when absent or naming the authenticated account itself.
fn authzid_matches(authzid: Option<&str>, user: Option<&BareJid>) -> bool {
    match authzid {
        None | Some("") => true,
        Some(z) => match (parse_jid(z), user) {
            (Ok(z), Some(user)) => z.as_str() == user.as_str(),
            _ => false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_payload_decoding() {
        assert_eq!(decode_sasl(""), Ok(None));
        assert_eq!(decode_sasl("  \n"), Ok(None));
        assert_eq!(decode_sasl("="), Ok(Some(vec![])));
        assert_eq!(decode_sasl("aGk=\r\n"), Ok(Some(b"hi".to_vec())));
        assert_eq!(decode_sasl("not base64!"), Err(()));
    }

    #[test]
    fn authzid_must_name_the_same_account() {
        let user = BareJid::new("juliet@example.org").unwrap();
        assert!(authzid_matches(None, Some(&user)));
        assert!(authzid_matches(Some(""), Some(&user)));
        assert!(authzid_matches(Some("Juliet@Example.org"), Some(&user)));
        // RFC 7622 §3.2: the final dot of the domain does not make another address.
        assert!(authzid_matches(Some("juliet@example.org."), Some(&user)));
        assert!(!authzid_matches(Some("romeo@example.org"), Some(&user)));
        assert!(!authzid_matches(
            Some("juliet@example.org/balcony"),
            Some(&user)
        ));
        assert!(!authzid_matches(Some("juliet@example.org"), None));
    }
}
