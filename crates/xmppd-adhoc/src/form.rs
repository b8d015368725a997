//! XEP-0004 data forms: the forms a command shows and the ones a client submits, as
//! xmpp-parsers' [`DataForm`] and [`Field`], with the few builders and readers commands use.
//!
//! Not here: validation of values against field types (each command checks what it reads),
//! media elements (XEP-0221), reported/item tables.

use minidom::Element;
pub use xmpp_parsers::data_forms::{DataForm, DataFormType, Field, FieldType, Option_};

pub const NS_DATA: &str = "jabber:x:data";

/// A form of `kind` with the hidden `FORM_TYPE` field naming `form_type`.
pub fn new(kind: DataFormType, form_type: &str) -> DataForm {
    DataForm::new(kind, form_type, Vec::new())
}

/// The form as an element. xmpp-parsers leaves out `type='text-single'`, the default; a form
/// to fill in keeps it, since XEP-0004 §3.2 says each field of one SHOULD have a type.
pub fn to_element(form: &DataForm) -> Element {
    let mut x = Element::from(form.clone());
    for f in x.children_mut() {
        if f.is("field", NS_DATA) && f.attr("type").is_none() {
            xmppd_core::stanza::set_attr(f, "type", "text-single");
        }
    }
    x
}

/// Builders for the fields a command shows.
pub trait FieldExt: Sized {
    fn label(self, label: &str) -> Self;
    fn required(self) -> Self;
    /// A `text-multi` value: one `<value/>` per line.
    fn text(self, text: &str) -> Self;
    fn option(self, label: &str, value: &str) -> Self;
}

impl FieldExt for Field {
    fn label(mut self, label: &str) -> Self {
        self.label = Some(label.into());
        self
    }

    fn required(mut self) -> Self {
        self.required = true;
        self
    }

    fn text(mut self, text: &str) -> Self {
        self.values.extend(text.lines().map(str::to_owned));
        self
    }

    fn option(mut self, label: &str, value: &str) -> Self {
        self.options.push(Option_ {
            label: Some(label.into()),
            value: value.into(),
        });
        self
    }
}

/// Builders and readers of a whole form.
pub trait FormExt {
    fn title(self, title: &str) -> Self;
    fn field(self, field: Field) -> Self;
    /// The values of field `var` (empty when absent).
    fn values(&self, var: &str) -> &[String];
    /// The first value of `var`, trimmed; `None` when absent or blank.
    fn value(&self, var: &str) -> Option<&str>;
    /// A `text-multi` field's values joined by newlines; `None` when absent or blank.
    fn text(&self, var: &str) -> Option<String>;
}

impl FormExt for DataForm {
    fn title(mut self, title: &str) -> Self {
        self.title = Some(title.into());
        self
    }

    fn field(mut self, field: Field) -> Self {
        self.fields.push(field);
        self
    }

    fn values(&self, var: &str) -> &[String] {
        self.fields
            .iter()
            .find(|f| f.var.as_deref() == Some(var))
            .map(|f| f.values.as_slice())
            .unwrap_or_default()
    }

    fn value(&self, var: &str) -> Option<&str> {
        self.values(var)
            .first()
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    fn text(&self, var: &str) -> Option<String> {
        let text = self.values(var).join("\n");
        (!text.trim().is_empty()).then_some(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(xml: &str) -> Result<DataForm, xso::error::FromElementError> {
        DataForm::try_from(xml.parse::<Element>().unwrap())
    }

    #[test]
    fn a_built_form_parses_back() {
        let form = new(DataFormType::Form, "urn:x")
            .title("T")
            .field(
                Field::new("body", FieldType::TextMulti)
                    .required()
                    .text("a\nb"),
            )
            .field(
                Field::new("max", FieldType::ListSingle)
                    .label("Max")
                    .option("25", "25"),
            )
            .field(Field::new("name", FieldType::TextSingle));
        let x = to_element(&form);
        let name = x.children().find(|f| f.attr("var") == Some("name"));
        assert_eq!(name.and_then(|f| f.attr("type")), Some("text-single"));
        let back = DataForm::try_from(x).unwrap();
        assert_eq!(back.type_, DataFormType::Form);
        assert_eq!(back.title.as_deref(), Some("T"));
        assert_eq!(back.form_type(), Some("urn:x"));
        assert_eq!(back.text("body").as_deref(), Some("a\nb"));
        assert!(back.fields[1].required);
        assert_eq!(back.fields[2].label.as_deref(), Some("Max"));
    }

    #[test]
    fn malformed_forms_are_refused_and_blank_reads_as_absent() {
        assert!(parse("<x xmlns='jabber:x:data' type='bogus'/>").is_err());
        assert!(parse("<x xmlns='jabber:x:data'/>").is_err());
        // A field other than `fixed` without a `var` (XEP-0004 §3.2).
        assert!(parse("<x xmlns='jabber:x:data' type='submit'><field/></x>").is_err());
        let form = parse(
            "<x xmlns='jabber:x:data' type='submit'><field var='a'><value>  </value></field></x>",
        )
        .unwrap();
        assert_eq!(form.value("a"), None);
        assert_eq!(form.text("a"), None);
        assert!(form.values("missing").is_empty());
    }
}
