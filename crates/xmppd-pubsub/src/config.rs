//! A node's configuration (XEP-0060 §16.4.3, `pubsub#node_config`): what create, configure
//! and publish-options (§7.1.5) forms set, and whether a publish's preconditions hold.

use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType};
use xmpp_parsers::ns;
use xmppd_core::stanza::{Condition, StanzaError};

use crate::errors::pubsub_error;

/// Who may subscribe to a node and retrieve its items (XEP-0060 §4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessModel {
    Open,
    /// Entities subscribed to the owner's presence (XEP-0163's default).
    Presence,
    /// Contacts in the owner's roster groups named by `pubsub#roster_groups_allowed`.
    Roster,
    /// The owner only (and, on the service, the node's owners).
    Whitelist,
}

impl AccessModel {
    pub fn as_str(self) -> &'static str {
        match self {
            AccessModel::Open => "open",
            AccessModel::Presence => "presence",
            AccessModel::Roster => "roster",
            AccessModel::Whitelist => "whitelist",
        }
    }

    pub fn parse(s: &str) -> Option<AccessModel> {
        Some(match s {
            "open" => AccessModel::Open,
            "presence" => AccessModel::Presence,
            "roster" => AccessModel::Roster,
            "whitelist" => AccessModel::Whitelist,
            _ => return None,
        })
    }
}

/// An entity's standing on a node besides none (XEP-0060 §4.1), always of a bare JID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Affiliation {
    Owner,
    /// Publishes and retracts items, and reads them.
    Publisher,
    /// Subscribes and reads items, whatever the access model.
    Member,
    /// Neither subscribes nor reads.
    Outcast,
}

impl Affiliation {
    pub fn as_str(self) -> &'static str {
        match self {
            Affiliation::Owner => "owner",
            Affiliation::Publisher => "publisher",
            Affiliation::Member => "member",
            Affiliation::Outcast => "outcast",
        }
    }

    pub fn parse(s: &str) -> Option<Affiliation> {
        Some(match s {
            "owner" => Affiliation::Owner,
            "publisher" => Affiliation::Publisher,
            "member" => Affiliation::Member,
            "outcast" => Affiliation::Outcast,
            _ => return None,
        })
    }

    /// Whether it publishes and retracts items (§4.1).
    pub fn publishes(self) -> bool {
        matches!(self, Affiliation::Owner | Affiliation::Publisher)
    }

    /// Whether it reads items and subscribes whatever the access model (§4.5 whitelist).
    pub fn reads(self) -> bool {
        !matches!(self, Affiliation::Outcast)
    }
}

/// When the last published item is sent to a new subscriber (XEP-0060 §12.20).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendLast {
    Never,
    OnSub,
    OnSubAndPresence,
}

impl SendLast {
    pub fn as_str(self) -> &'static str {
        match self {
            SendLast::Never => "never",
            SendLast::OnSub => "on_sub",
            SendLast::OnSubAndPresence => "on_sub_and_presence",
        }
    }

    pub fn parse(s: &str) -> Option<SendLast> {
        Some(match s {
            "never" => SendLast::Never,
            "on_sub" => SendLast::OnSub,
            "on_sub_and_presence" => SendLast::OnSubAndPresence,
            _ => return None,
        })
    }
}

/// The server's bounds on nodes: `pubsub#max_items` `max` means `max_items` here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The most items a node keeps.
    pub max_items: u32,
    /// The largest payload of one item, serialised, in bytes.
    pub max_payload_bytes: usize,
    /// The most nodes one account has: its own (personal eventing), and those it created on
    /// the service.
    pub max_nodes: usize,
    /// The most nodes the service has, whoever created them.
    pub max_service_nodes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // Legacy OMEMO publishes one bundle node per device: room for many devices.
        Limits {
            max_items: 256,
            max_payload_bytes: 64 * 1024,
            max_nodes: 1000,
            max_service_nodes: 100_000,
        }
    }
}

/// One node's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeConfig {
    pub access: AccessModel,
    pub max_items: u32,
    pub persist_items: bool,
    pub send_last: SendLast,
    pub deliver_payloads: bool,
    pub notify_retract: bool,
    /// Whether subscribers are told of a configuration change (§8.2.5.3).
    pub notify_config: bool,
    /// Whether subscribers are told of the node's deletion (§8.4.2).
    pub notify_delete: bool,
    pub roster_groups: Vec<String>,
}

/// One option a form sets, understood.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Setting {
    Access(AccessModel),
    MaxItems(u32),
    Persist(bool),
    SendLast(SendLast),
    DeliverPayloads(bool),
    NotifyRetract(bool),
    NotifyConfig(bool),
    NotifyDelete(bool),
    RosterGroups(Vec<String>),
}

impl NodeConfig {
    /// The configuration of a personal eventing node (XEP-0163 §4: presence access, the
    /// last item on presence).
    pub fn pep_default() -> NodeConfig {
        NodeConfig {
            access: AccessModel::Presence,
            max_items: 1,
            persist_items: true,
            send_last: SendLast::OnSubAndPresence,
            deliver_payloads: true,
            notify_retract: true,
            notify_config: false,
            notify_delete: true,
            roster_groups: Vec::new(),
        }
    }

    /// The configuration of a node of the pubsub service.
    pub fn service_default() -> NodeConfig {
        NodeConfig {
            access: AccessModel::Open,
            max_items: 10,
            persist_items: true,
            send_last: SendLast::Never,
            ..NodeConfig::pep_default()
        }
    }

    /// Applies a create, configure or publish-options form. An option the service does not
    /// know or a value it does not accept is an error naming it, and nothing is changed.
    pub fn apply(&mut self, form: &DataForm, limits: &Limits) -> Result<(), String> {
        let settings = settings(form, limits)?;
        for s in settings {
            match s {
                Setting::Access(a) => self.access = a,
                Setting::MaxItems(n) => self.max_items = n,
                Setting::Persist(p) => self.persist_items = p,
                Setting::SendLast(s) => self.send_last = s,
                Setting::DeliverPayloads(d) => self.deliver_payloads = d,
                Setting::NotifyRetract(n) => self.notify_retract = n,
                Setting::NotifyConfig(n) => self.notify_config = n,
                Setting::NotifyDelete(n) => self.notify_delete = n,
                Setting::RosterGroups(g) => self.roster_groups = g,
            }
        }
        Ok(())
    }

    /// The items the node keeps: a node that does not persist items keeps the last one only,
    /// to send it to those who show interest later (XEP-0060 §12.20).
    pub fn kept_items(&self) -> u32 {
        if self.persist_items {
            self.max_items
        } else {
            1
        }
    }

    /// XEP-0060 §7.1.5: publish-options of a publish to an existing node are preconditions;
    /// any that the node's configuration does not meet refuses the publish with `<conflict/>`
    /// and `<precondition-not-met/>`.
    pub fn check_preconditions(&self, form: &DataForm, limits: &Limits) -> Result<(), StanzaError> {
        let not_met = |text: String| {
            let mut e = pubsub_error(Condition::Conflict, "precondition-not-met");
            e.text = Some(text);
            e
        };
        let mut wanted = self.clone();
        wanted.apply(form, limits).map_err(not_met)?;
        if wanted != *self {
            return Err(not_met("the node's configuration differs".into()));
        }
        Ok(())
    }

    /// The configuration as a `pubsub#node_config` form (§8.2).
    pub fn to_form(&self, limits: &Limits) -> DataForm {
        let list = |var: &str, value: &str, options: &[&str]| {
            let mut f = Field::new(var, FieldType::ListSingle).with_value(value);
            f.options = options
                .iter()
                .map(|o| xmpp_parsers::data_forms::Option_ {
                    label: None,
                    value: (*o).into(),
                })
                .collect();
            f
        };
        let boolean = |var: &str, v: bool| {
            Field::new(var, FieldType::Boolean).with_value(if v { "1" } else { "0" })
        };
        let max_items = if self.max_items == limits.max_items {
            "max".to_owned()
        } else {
            self.max_items.to_string()
        };
        let mut groups = Field::new("pubsub#roster_groups_allowed", FieldType::ListMulti);
        groups.values = self.roster_groups.clone();
        DataForm::new(
            DataFormType::Form,
            ns::PUBSUB_CONFIGURE,
            vec![
                list(
                    "pubsub#access_model",
                    self.access.as_str(),
                    &["open", "presence", "roster", "whitelist"],
                ),
                Field::text_single("pubsub#max_items", &max_items),
                boolean("pubsub#persist_items", self.persist_items),
                list(
                    "pubsub#send_last_published_item",
                    self.send_last.as_str(),
                    &["never", "on_sub", "on_sub_and_presence"],
                ),
                boolean("pubsub#deliver_payloads", self.deliver_payloads),
                boolean("pubsub#notify_retract", self.notify_retract),
                boolean("pubsub#notify_config", self.notify_config),
                boolean("pubsub#notify_delete", self.notify_delete),
                groups,
            ],
        )
    }
}

fn boolean(v: &str) -> Option<bool> {
    match v {
        "1" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// The settings of `form`, each checked. Fields with no value are left as they are (a
/// client may send the form it was given back with some values cleared).
fn settings(form: &DataForm, limits: &Limits) -> Result<Vec<Setting>, String> {
    let mut out = Vec::new();
    for field in &form.fields {
        let Some(var) = field.var.as_deref() else {
            continue;
        };
        if var == "FORM_TYPE" {
            continue;
        }
        if var == "pubsub#roster_groups_allowed" {
            out.push(Setting::RosterGroups(field.values.clone()));
            continue;
        }
        let Some(value) = field.values.first().map(|v| v.trim()) else {
            continue;
        };
        let bad = || format!("{var}: '{value}' is not accepted");
        let setting = match var {
            "pubsub#access_model" => Setting::Access(AccessModel::parse(value).ok_or_else(bad)?),
            "pubsub#max_items" => Setting::MaxItems(match value {
                "max" => limits.max_items,
                n => match n.parse::<u32>() {
                    Ok(n) if (1..=limits.max_items).contains(&n) => n,
                    _ => return Err(bad()),
                },
            }),
            "pubsub#persist_items" => Setting::Persist(boolean(value).ok_or_else(bad)?),
            "pubsub#send_last_published_item" => {
                Setting::SendLast(SendLast::parse(value).ok_or_else(bad)?)
            }
            "pubsub#deliver_payloads" => Setting::DeliverPayloads(boolean(value).ok_or_else(bad)?),
            "pubsub#notify_retract" => Setting::NotifyRetract(boolean(value).ok_or_else(bad)?),
            "pubsub#notify_config" => Setting::NotifyConfig(boolean(value).ok_or_else(bad)?),
            "pubsub#notify_delete" => Setting::NotifyDelete(boolean(value).ok_or_else(bad)?),
            // Options that only name what xmppd does anyway.
            "pubsub#publish_model" if value == "publishers" => continue,
            "pubsub#notify_sub" if boolean(value).is_some() => continue,
            "pubsub#title" | "pubsub#description" | "pubsub#type" => continue,
            _ => return Err(format!("{var} is not supported")),
        };
        out.push(setting);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(fields: &[(&str, &str)]) -> DataForm {
        DataForm::new(
            DataFormType::Submit,
            "http://jabber.org/protocol/pubsub#publish-options",
            fields
                .iter()
                .map(|(var, v)| Field::text_single(var, v))
                .collect(),
        )
    }

    #[test]
    fn publish_options_set_a_new_nodes_configuration() {
        let limits = Limits::default();
        let mut c = NodeConfig::pep_default();
        c.apply(
            &form(&[
                ("pubsub#access_model", "open"),
                ("pubsub#max_items", "max"),
                ("pubsub#persist_items", "true"),
                ("pubsub#send_last_published_item", "never"),
            ]),
            &limits,
        )
        .unwrap();
        assert_eq!(c.access, AccessModel::Open);
        assert_eq!(c.max_items, limits.max_items);
        assert_eq!(c.send_last, SendLast::Never);
    }

    #[test]
    fn preconditions_hold_only_for_the_same_configuration() {
        let limits = Limits::default();
        let mut c = NodeConfig::pep_default();
        c.apply(&form(&[("pubsub#max_items", "max")]), &limits)
            .unwrap();
        // `max` and the number it stands for are the same precondition.
        c.check_preconditions(&form(&[("pubsub#max_items", "max")]), &limits)
            .unwrap();
        let n = limits.max_items.to_string();
        c.check_preconditions(&form(&[("pubsub#max_items", &n)]), &limits)
            .unwrap();
        c.check_preconditions(&form(&[("pubsub#access_model", "presence")]), &limits)
            .unwrap();
        let e = c
            .check_preconditions(&form(&[("pubsub#access_model", "open")]), &limits)
            .unwrap_err();
        assert_eq!(e.condition, Condition::Conflict);
        assert!(e.app.unwrap().is("precondition-not-met", ns::PUBSUB_ERRORS));
    }

    #[test]
    fn unknown_options_and_bad_values_are_refused() {
        let limits = Limits::default();
        let mut c = NodeConfig::pep_default();
        let before = c.clone();
        assert!(c
            .apply(&form(&[("pubsub#access_model", "everyone")]), &limits)
            .is_err());
        assert!(c
            .apply(&form(&[("pubsub#max_items", "0")]), &limits)
            .is_err());
        assert!(c
            .apply(&form(&[("pubsub#max_items", "100000")]), &limits)
            .is_err());
        assert!(c
            .apply(
                &form(&[("pubsub#access_model", "open"), ("x#y", "1")]),
                &limits
            )
            .is_err());
        assert_eq!(c, before, "a refused form changes nothing");
        let e = c
            .check_preconditions(&form(&[("x#y", "1")]), &limits)
            .unwrap_err();
        assert_eq!(e.condition, Condition::Conflict);
    }

    #[test]
    fn a_node_that_does_not_persist_keeps_its_last_item() {
        let mut c = NodeConfig::service_default();
        assert_eq!(c.kept_items(), 10);
        c.persist_items = false;
        assert_eq!(c.kept_items(), 1);
    }

    #[test]
    fn the_configuration_form_reads_back() {
        let limits = Limits::default();
        let mut c = NodeConfig::pep_default();
        c.access = AccessModel::Whitelist;
        c.max_items = limits.max_items;
        let mut back = NodeConfig::service_default();
        back.apply(&c.to_form(&limits), &limits).unwrap();
        assert_eq!(back, c);
    }
}
