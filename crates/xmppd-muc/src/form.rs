//! Data forms (XEP-0004) as far as the room service needs them, and the room configuration
//! ([`RoomConfig`]) with its `muc#roomconfig` form.
//!
//! The configuration is stored as its own submitted form, so the parser that reads an owner's
//! submission also reads the stored copy after a restart. Not done here: forms with multiple
//! items (reported/item), field validation beyond the types this service uses.

use minidom::Element;
use xmppd_core::stanza::{elem, set_attr, text_elem, Condition, StanzaError};

pub const NS_DATA: &str = "jabber:x:data";
pub const FORM_ROOMCONFIG: &str = "http://jabber.org/protocol/muc#roomconfig";
pub const FORM_ROOMINFO: &str = "http://jabber.org/protocol/muc#roominfo";
pub const FORM_REQUEST: &str = "http://jabber.org/protocol/muc#request";
pub const FORM_REGISTER: &str = "http://jabber.org/protocol/muc#register";
/// xmppd's own configuration field: non-members may register with a members-only room.
pub const FIELD_OPEN_REGISTRATION: &str = "xmppd#roomconfig_openregistration";

/// A parsed `<x xmlns='jabber:x:data'/>`: its type and field values in document order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Form {
    /// `form`, `submit`, `cancel` or `result`.
    pub kind: String,
    pub fields: Vec<(String, Vec<String>)>,
}

impl Form {
    /// Reads a form element; `None` if `x` is not one.
    pub fn parse(x: &Element) -> Option<Form> {
        if !x.is("x", NS_DATA) {
            return None;
        }
        let fields = x
            .children()
            .filter(|c| c.is("field", NS_DATA))
            .filter_map(|f| {
                let var = f.attr("var")?.to_owned();
                let values = f
                    .children()
                    .filter(|v| v.is("value", NS_DATA))
                    .map(|v| v.text())
                    .collect();
                Some((var, values))
            })
            .collect();
        Some(Form {
            kind: x.attr("type").unwrap_or("form").to_owned(),
            fields,
        })
    }

    /// The first value of `var`.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(v, _)| v == var)
            .and_then(|(_, vals)| vals.first())
            .map(String::as_str)
    }

    pub fn form_type(&self) -> Option<&str> {
        self.value("FORM_TYPE")
    }

    /// A boolean field (`1`/`true`/`0`/`false`); `Err` for another value.
    pub fn bool(&self, var: &str) -> Result<Option<bool>, StanzaError> {
        match self.value(var) {
            None => Ok(None),
            Some("1" | "true") => Ok(Some(true)),
            Some("0" | "false") => Ok(Some(false)),
            Some(other) => Err(bad(var, other)),
        }
    }
}

fn bad(var: &str, value: &str) -> StanzaError {
    StanzaError::with_text(
        Condition::NotAcceptable,
        format!("invalid value {value:?} for {var}"),
    )
}

/// Builds a form element field by field.
pub struct FormBuilder(Element);

impl FormBuilder {
    pub fn new(kind: &str, form_type: &str) -> Self {
        let mut x = elem("x", NS_DATA, &[("type", kind)]);
        let mut f = elem(
            "field",
            NS_DATA,
            &[("var", "FORM_TYPE"), ("type", "hidden")],
        );
        f.append_child(text_elem("value", NS_DATA, form_type));
        x.append_child(f);
        FormBuilder(x)
    }

    pub fn title(mut self, title: &str) -> Self {
        self.0.append_child(text_elem("title", NS_DATA, title));
        self
    }

    /// A field with a label (empty: none), a type (empty: none) and values.
    pub fn field(mut self, var: &str, kind: &str, label: &str, values: &[&str]) -> Self {
        let mut f = elem("field", NS_DATA, &[("var", var)]);
        if !kind.is_empty() {
            set_attr(&mut f, "type", kind);
        }
        if !label.is_empty() {
            set_attr(&mut f, "label", label);
        }
        for v in values {
            f.append_child(text_elem("value", NS_DATA, v));
        }
        self.0.append_child(f);
        self
    }

    /// A `list-single` field with its options.
    pub fn list(mut self, var: &str, label: &str, value: &str, options: &[&str]) -> Self {
        let mut f = elem(
            "field",
            NS_DATA,
            &[("var", var), ("type", "list-single"), ("label", label)],
        );
        f.append_child(text_elem("value", NS_DATA, value));
        for o in options {
            let mut opt = elem("option", NS_DATA, &[("label", o)]);
            opt.append_child(text_elem("value", NS_DATA, o));
            f.append_child(opt);
        }
        self.0.append_child(f);
        self
    }

    pub fn build(self) -> Element {
        self.0
    }
}

fn flag(b: bool) -> &'static str {
    if b {
        "1"
    } else {
        "0"
    }
}

/// Who sees occupants' real JIDs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Whois {
    /// Semi-anonymous: moderators only.
    Moderators,
    /// Non-anonymous: every occupant.
    Anyone,
}

/// A room's configuration (XEP-0045 §10.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomConfig {
    pub name: String,
    pub description: String,
    pub persistent: bool,
    pub public: bool,
    pub members_only: bool,
    /// The room password; `None` when the room is not password-protected.
    pub password: Option<String>,
    pub moderated: bool,
    pub max_occupants: usize,
    pub whois: Whois,
    /// Messages of discussion history kept for new occupants.
    pub history_length: usize,
    pub allow_invites: bool,
    pub change_subject: bool,
    /// Messages are archived (the XEP-0313 hook stores them durably).
    pub archived: bool,
    /// Members-only rooms: anyone not banned may register (XEP-0045 §7.10) and so become a
    /// member. Open rooms always accept registrations.
    pub open_registration: bool,
}

impl RoomConfig {
    /// A new room's configuration, within the service limits.
    pub fn new(max_occupants: usize, history_length: usize) -> Self {
        RoomConfig {
            name: String::new(),
            description: String::new(),
            persistent: false,
            public: true,
            members_only: false,
            password: None,
            moderated: false,
            max_occupants,
            whois: Whois::Moderators,
            history_length,
            allow_invites: false,
            change_subject: true,
            archived: false,
            open_registration: false,
        }
    }

    /// The configuration form sent to an owner (`type='form'`) or stored (`type='submit'`).
    pub fn to_form(&self, kind: &str, max_occupants: usize) -> Element {
        let max = self.max_occupants.to_string();
        let limit = max_occupants.to_string();
        let history = self.history_length.to_string();
        let whois = match self.whois {
            Whois::Moderators => "moderators",
            Whois::Anyone => "anyone",
        };
        let secret = self.password.as_deref().unwrap_or("");
        let mut b = FormBuilder::new(kind, FORM_ROOMCONFIG);
        if kind == "form" {
            b = b.title("Room configuration");
        }
        b.field(
            "muc#roomconfig_roomname",
            "text-single",
            "Name",
            &[&self.name],
        )
        .field(
            "muc#roomconfig_roomdesc",
            "text-single",
            "Description",
            &[&self.description],
        )
        .field(
            "muc#roomconfig_persistentroom",
            "boolean",
            "Persistent",
            &[flag(self.persistent)],
        )
        .field(
            "muc#roomconfig_publicroom",
            "boolean",
            "Listed in the room directory",
            &[flag(self.public)],
        )
        .field(
            "muc#roomconfig_membersonly",
            "boolean",
            "Members only",
            &[flag(self.members_only)],
        )
        .field(
            "muc#roomconfig_passwordprotectedroom",
            "boolean",
            "Password protected",
            &[flag(self.password.is_some())],
        )
        .field(
            "muc#roomconfig_roomsecret",
            "text-private",
            "Password",
            &[secret],
        )
        .field(
            "muc#roomconfig_moderatedroom",
            "boolean",
            "Moderated",
            &[flag(self.moderated)],
        )
        .list(
            "muc#roomconfig_maxusers",
            "Maximum occupants",
            &max,
            &["10", "20", "50", "100", &limit],
        )
        .list(
            "muc#roomconfig_whois",
            "Who may see real JIDs",
            whois,
            &["moderators", "anyone"],
        )
        .field(
            "muc#maxhistoryfetch",
            "text-single",
            "Messages of history for new occupants",
            &[&history],
        )
        .field(
            "muc#roomconfig_allowinvites",
            "boolean",
            "Occupants may invite",
            &[flag(self.allow_invites)],
        )
        .field(
            "muc#roomconfig_changesubject",
            "boolean",
            "Occupants may change the subject",
            &[flag(self.change_subject)],
        )
        .field(
            "muc#roomconfig_enablearchiving",
            "boolean",
            "Archive messages",
            &[flag(self.archived)],
        )
        .field(
            FIELD_OPEN_REGISTRATION,
            "boolean",
            "Members-only: anyone may register and so become a member",
            &[flag(self.open_registration)],
        )
        .build()
    }

    /// Applies a submitted form over this configuration; fields left out keep their values.
    /// Limits are clamped to the service's (`max_occupants`, `max_history`).
    pub fn apply(
        &self,
        form: &Form,
        max_occupants: usize,
        max_history: usize,
    ) -> Result<RoomConfig, StanzaError> {
        if let Some(t) = form.form_type() {
            if t != FORM_ROOMCONFIG {
                return Err(bad("FORM_TYPE", t));
            }
        }
        let mut c = self.clone();
        if let Some(v) = form.value("muc#roomconfig_roomname") {
            c.name = v.to_owned();
        }
        if let Some(v) = form.value("muc#roomconfig_roomdesc") {
            c.description = v.to_owned();
        }
        let set = |field: &mut bool, var: &str| -> Result<(), StanzaError> {
            if let Some(v) = form.bool(var)? {
                *field = v;
            }
            Ok(())
        };
        set(&mut c.persistent, "muc#roomconfig_persistentroom")?;
        set(&mut c.public, "muc#roomconfig_publicroom")?;
        set(&mut c.members_only, "muc#roomconfig_membersonly")?;
        set(&mut c.moderated, "muc#roomconfig_moderatedroom")?;
        set(&mut c.allow_invites, "muc#roomconfig_allowinvites")?;
        set(&mut c.change_subject, "muc#roomconfig_changesubject")?;
        set(&mut c.archived, "muc#roomconfig_enablelogging")?;
        set(&mut c.archived, "muc#roomconfig_enablearchiving")?;
        set(&mut c.open_registration, FIELD_OPEN_REGISTRATION)?;
        let mut protected = c.password.is_some();
        set(&mut protected, "muc#roomconfig_passwordprotectedroom")?;
        let secret = form
            .value("muc#roomconfig_roomsecret")
            .map(str::to_owned)
            .or_else(|| c.password.clone())
            .unwrap_or_default();
        c.password = if protected {
            if secret.is_empty() {
                return Err(StanzaError::with_text(
                    Condition::NotAcceptable,
                    "a password-protected room needs muc#roomconfig_roomsecret",
                ));
            }
            Some(secret)
        } else {
            None
        };
        if let Some(v) = form.value("muc#roomconfig_maxusers") {
            c.max_occupants = match v {
                "" | "none" => max_occupants,
                n => n
                    .parse::<usize>()
                    .map_err(|_| bad("muc#roomconfig_maxusers", v))?
                    .min(max_occupants)
                    .max(1),
            };
        }
        if let Some(v) = form.value("muc#roomconfig_whois") {
            c.whois = match v {
                "moderators" => Whois::Moderators,
                "anyone" => Whois::Anyone,
                _ => return Err(bad("muc#roomconfig_whois", v)),
            };
        }
        for var in ["muc#maxhistoryfetch", "muc#roomconfig_historylength"] {
            if let Some(v) = form.value(var) {
                c.history_length = v
                    .parse::<usize>()
                    .map_err(|_| bad(var, v))?
                    .min(max_history);
            }
        }
        Ok(c)
    }

    /// The stored form of this configuration.
    pub fn serialize(&self) -> String {
        crate::to_xml(&self.to_form("submit", self.max_occupants))
    }

    /// Reads a stored configuration; unknown or broken content yields `None`.
    pub fn deserialize(text: &str, max_occupants: usize, max_history: usize) -> Option<Self> {
        let x: Element = text.parse().ok()?;
        let form = Form::parse(&x)?;
        RoomConfig::new(max_occupants, max_history)
            .apply(&form, max_occupants, max_history)
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn submit(fields: &[(&str, &str)]) -> Form {
        Form {
            kind: "submit".into(),
            fields: fields
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect(),
        }
    }

    #[test]
    fn stored_config_round_trips() {
        let mut c = RoomConfig::new(200, 20);
        c.name = "Lounge <&>".into();
        c.persistent = true;
        c.members_only = true;
        c.password = Some("s3cret".into());
        c.whois = Whois::Anyone;
        c.max_occupants = 42;
        c.history_length = 5;
        c.archived = true;
        c.open_registration = true;
        let text = c.serialize();
        assert_eq!(RoomConfig::deserialize(&text, 200, 20), Some(c));
        assert_eq!(RoomConfig::deserialize("<garbage", 200, 20), None);
    }

    #[test]
    fn submission_is_applied_and_clamped() {
        let c = RoomConfig::new(100, 20);
        let f = submit(&[
            ("FORM_TYPE", FORM_ROOMCONFIG),
            ("muc#roomconfig_persistentroom", "true"),
            ("muc#roomconfig_maxusers", "5000"),
            ("muc#maxhistoryfetch", "99"),
        ]);
        let n = c.apply(&f, 100, 20).unwrap();
        assert!(n.persistent);
        assert_eq!((n.max_occupants, n.history_length), (100, 20));
        // Fields left out keep their value.
        assert_eq!(n.public, c.public);
    }

    #[test]
    fn bad_submissions_are_refused() {
        let c = RoomConfig::new(100, 20);
        for f in [
            submit(&[("muc#roomconfig_persistentroom", "maybe")]),
            submit(&[("muc#roomconfig_whois", "everybody")]),
            submit(&[("muc#roomconfig_passwordprotectedroom", "1")]),
            submit(&[("FORM_TYPE", "urn:other")]),
            submit(&[("muc#roomconfig_maxusers", "-3")]),
        ] {
            assert!(c.apply(&f, 100, 20).is_err(), "{f:?}");
        }
    }

    #[test]
    fn parse_reads_values_in_order() {
        let x: Element = "<x xmlns='jabber:x:data' type='submit'>\
            <field var='a'><value>1</value><value>2</value></field><field/></x>"
            .parse()
            .unwrap();
        let f = Form::parse(&x).unwrap();
        assert_eq!(f.kind, "submit");
        assert_eq!(
            f.fields,
            vec![("a".to_owned(), vec!["1".into(), "2".into()])]
        );
        assert!(Form::parse(&Element::bare("x", "other")).is_none());
    }
}
