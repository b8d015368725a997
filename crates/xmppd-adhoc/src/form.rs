//! XEP-0004 data forms: building the forms a command shows and reading the ones a client
//! submits.
//!
//! Only what commands need: fields with their type, label, required flag, values and options,
//! the form title and instructions. Not here: validation of values against field types (each
//! command checks what it reads), media elements (XEP-0221), reported/item tables.

use minidom::Element;
use xmppd_core::stanza::{elem, set_attr, text_elem};

pub const NS_DATA: &str = "jabber:x:data";

/// The `type` of a form (XEP-0004 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FormKind {
    Form,
    Submit,
    Cancel,
    Result,
}

impl FormKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FormKind::Form => "form",
            FormKind::Submit => "submit",
            FormKind::Cancel => "cancel",
            FormKind::Result => "result",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "form" => FormKind::Form,
            "submit" => FormKind::Submit,
            "cancel" => FormKind::Cancel,
            "result" => FormKind::Result,
            _ => return None,
        })
    }
}

/// One `<field/>`. The field type is kept as written (`text-single`, `jid-multi`…).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Field {
    pub var: String,
    pub kind: Option<String>,
    pub label: Option<String>,
    pub required: bool,
    pub values: Vec<String>,
    /// (label, value) of a list field's options.
    pub options: Vec<(String, String)>,
}

impl Field {
    pub fn new(var: &str, kind: &str) -> Self {
        Field {
            var: var.into(),
            kind: Some(kind.into()),
            ..Field::default()
        }
    }

    /// The hidden `FORM_TYPE` field naming the form's namespace.
    pub fn form_type(ns: &str) -> Self {
        Field::new("FORM_TYPE", "hidden").value(ns)
    }

    pub fn label(mut self, label: &str) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn required(mut self) -> Self {
        self.required = true;
        self
    }

    pub fn value(mut self, v: &str) -> Self {
        self.values.push(v.into());
        self
    }

    /// A `text-multi` value: one `<value/>` per line.
    pub fn text(mut self, text: &str) -> Self {
        self.values.extend(text.lines().map(str::to_owned));
        self
    }

    pub fn option(mut self, label: &str, value: &str) -> Self {
        self.options.push((label.into(), value.into()));
        self
    }

    fn to_element(&self) -> Element {
        let mut f = elem("field", NS_DATA, &[("var", &self.var)]);
        if let Some(k) = &self.kind {
            set_attr(&mut f, "type", k.as_str());
        }
        if let Some(l) = &self.label {
            set_attr(&mut f, "label", l.as_str());
        }
        if self.required {
            f.append_child(Element::bare("required", NS_DATA));
        }
        for v in &self.values {
            f.append_child(text_elem("value", NS_DATA, v));
        }
        for (label, value) in &self.options {
            let mut o = elem("option", NS_DATA, &[("label", label)]);
            o.append_child(text_elem("value", NS_DATA, value));
            f.append_child(o);
        }
        f
    }
}

/// A data form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Form {
    pub kind: FormKind,
    pub title: Option<String>,
    pub instructions: Option<String>,
    pub fields: Vec<Field>,
}

impl Form {
    pub fn new(kind: FormKind) -> Self {
        Form {
            kind,
            title: None,
            instructions: None,
            fields: Vec::new(),
        }
    }

    pub fn title(mut self, t: &str) -> Self {
        self.title = Some(t.into());
        self
    }

    pub fn instructions(mut self, t: &str) -> Self {
        self.instructions = Some(t.into());
        self
    }

    pub fn field(mut self, f: Field) -> Self {
        self.fields.push(f);
        self
    }

    pub fn to_element(&self) -> Element {
        let mut x = elem("x", NS_DATA, &[("type", self.kind.as_str())]);
        if let Some(t) = &self.title {
            x.append_child(text_elem("title", NS_DATA, t));
        }
        if let Some(i) = &self.instructions {
            x.append_child(text_elem("instructions", NS_DATA, i));
        }
        for f in &self.fields {
            x.append_child(f.to_element());
        }
        x
    }

    /// Reads an `<x xmlns='jabber:x:data'/>`; `None` if it is not one or has no valid type.
    pub fn parse(x: &Element) -> Option<Form> {
        if !x.is("x", NS_DATA) {
            return None;
        }
        let mut form = Form::new(FormKind::parse(x.attr("type")?)?);
        form.title = x.get_child("title", NS_DATA).map(Element::text);
        form.instructions = x.get_child("instructions", NS_DATA).map(Element::text);
        for f in x.children().filter(|c| c.is("field", NS_DATA)) {
            form.fields.push(Field {
                var: f.attr("var").unwrap_or_default().to_owned(),
                kind: f.attr("type").map(str::to_owned),
                label: f.attr("label").map(str::to_owned),
                required: f.has_child("required", NS_DATA),
                values: f
                    .children()
                    .filter(|v| v.is("value", NS_DATA))
                    .map(Element::text)
                    .collect(),
                options: Vec::new(),
            });
        }
        Some(form)
    }

    /// The values of field `var` (empty when absent).
    pub fn values(&self, var: &str) -> &[String] {
        self.fields
            .iter()
            .find(|f| f.var == var)
            .map(|f| f.values.as_slice())
            .unwrap_or_default()
    }

    /// The first value of `var`, trimmed; `None` when absent or blank.
    pub fn value(&self, var: &str) -> Option<&str> {
        self.values(var)
            .first()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// A `text-multi` field's values joined by newlines; `None` when absent or blank.
    pub fn text(&self, var: &str) -> Option<String> {
        let text = self.values(var).join("\n");
        (!text.trim().is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_form_parses_back() {
        let form = Form::new(FormKind::Form)
            .title("T")
            .instructions("I")
            .field(Field::form_type("urn:x"))
            .field(Field::new("body", "text-multi").required().text("a\nb"))
            .field(
                Field::new("max", "list-single")
                    .label("Max")
                    .option("25", "25"),
            );
        let back = Form::parse(&form.to_element()).unwrap();
        assert_eq!(back.kind, FormKind::Form);
        assert_eq!(back.title.as_deref(), Some("T"));
        assert_eq!(back.value("FORM_TYPE"), Some("urn:x"));
        assert_eq!(back.text("body").as_deref(), Some("a\nb"));
        assert!(back.fields[1].required);
        assert_eq!(back.fields[2].label.as_deref(), Some("Max"));
    }

    #[test]
    fn parse_rejects_non_forms_and_reads_blank_as_absent() {
        assert!(Form::parse(&Element::bare("x", "urn:other")).is_none());
        assert!(Form::parse(&elem("x", NS_DATA, &[("type", "bogus")])).is_none());
        let mut x = elem("x", NS_DATA, &[("type", "submit")]);
        let mut f = elem("field", NS_DATA, &[("var", "a")]);
        f.append_child(text_elem("value", NS_DATA, "  "));
        x.append_child(f);
        let form = Form::parse(&x).unwrap();
        assert_eq!(form.value("a"), None);
        assert_eq!(form.text("a"), None);
        assert!(form.values("missing").is_empty());
    }
}
