//! The XEP-0050 `<command/>` element, which xmpp-parsers does not have, written with the same
//! xso derives it uses.

use std::borrow::Cow;

use xmpp_parsers::data_forms::DataForm;
use xso::{error::Error, AsXml, AsXmlText, FromXml, FromXmlText};

use crate::NS_COMMANDS;

/// `<command/>`, a request (`action`) or an answer (`status`) (XEP-0050 §3).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_COMMANDS, name = "command")]
pub struct CommandPayload {
    #[xml(attribute)]
    pub node: String,

    #[xml(attribute(default))]
    pub sessionid: Option<String>,

    /// Kept as written: an unknown action has its own error, `malformed-action` (§4.6).
    #[xml(attribute(default))]
    pub action: Option<String>,

    #[xml(attribute(default))]
    pub status: Option<Status>,

    #[xml(child(default))]
    pub actions: Option<Actions>,

    #[xml(child(n = ..))]
    pub notes: Vec<Note>,

    #[xml(child(default))]
    pub form: Option<DataForm>,
}

impl CommandPayload {
    /// An answer for `node` in session `sid`.
    pub fn answer(node: &str, sid: &str, status: Status) -> Self {
        CommandPayload {
            node: node.into(),
            sessionid: Some(sid.into()),
            action: None,
            status: Some(status),
            actions: None,
            notes: Vec::new(),
            form: None,
        }
    }
}

/// The actions a client may take next (§3.4): `execute` names the default.
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_COMMANDS, name = "actions")]
pub struct Actions {
    #[xml(attribute(default))]
    pub execute: Option<String>,

    #[xml(flag)]
    pub prev: bool,

    #[xml(flag)]
    pub next: bool,

    #[xml(flag)]
    pub complete: bool,
}

/// `<note type='…'>text</note>` (§3.4).
#[derive(FromXml, AsXml, Debug, Clone, PartialEq)]
#[xml(namespace = NS_COMMANDS, name = "note")]
pub struct Note {
    #[xml(attribute(name = "type", default))]
    pub kind: NoteKind,

    #[xml(text)]
    pub text: String,
}

/// The severity of a `<note/>`; `info` when absent (§3.4).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NoteKind {
    #[default]
    Info,
    Warn,
    Error,
}

/// A command's `status` (§3.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Executing,
    Completed,
    Canceled,
}

/// Text conversions of a keyword enum, both ways.
macro_rules! keywords {
    ($ty:ty, $what:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl FromXmlText for $ty {
            fn from_xml_text(data: String) -> Result<Self, Error> {
                match data.as_str() {
                    $($text => Ok(<$ty>::$variant),)+
                    _ => Err(Error::Other(concat!("Unknown ", $what, "."))),
                }
            }
        }

        impl AsXmlText for $ty {
            fn as_xml_text(&self) -> Result<Cow<'_, str>, Error> {
                Ok(Cow::Borrowed(match self {
                    $(<$ty>::$variant => $text,)+
                }))
            }
        }
    };
}

keywords!(NoteKind, "note type", { Info => "info", Warn => "warn", Error => "error" });
keywords!(Status, "command status", {
    Executing => "executing",
    Completed => "completed",
    Canceled => "canceled",
});
