//! XEP-0157 contact addresses: the URIs where a host's operators are reached, published in
//! the host's disco#info as the `http://jabber.org/network/serverinfo` form (XEP-0128) and so
//! part of its entity capabilities.

use std::collections::HashMap;

use async_trait::async_trait;
use minidom::Element;
use xmpp_parsers::data_forms::{DataForm, DataFormType};
use xmpp_parsers::server_info::generate_address_field;
use xmppd_core::module::{Hooks, Module};

/// XEP-0157 §3: the form's `FORM_TYPE`.
pub const NS_SERVER_INFO: &str = "http://jabber.org/network/serverinfo";

/// The addresses of each host that publishes some: (field var, URIs) per kind, such as
/// `("abuse-addresses", ["mailto:abuse@example.org"])`.
pub struct ContactAddresses {
    hosts: HashMap<String, DataForm>,
}

impl ContactAddresses {
    pub fn new(hosts: impl IntoIterator<Item = (String, Vec<(String, Vec<String>)>)>) -> Self {
        let hosts = hosts.into_iter().map(|(host, lists)| {
            // xmpp-parsers' `ServerInfo` lacks `status-addresses`; the fields are its own.
            let fields = lists
                .into_iter()
                .map(|(var, uris)| generate_address_field(var, uris))
                .collect();
            let form = DataForm::new(DataFormType::Result_, NS_SERVER_INFO, fields);
            (host, form)
        });
        ContactAddresses {
            hosts: hosts.collect(),
        }
    }
}

#[async_trait]
impl Module for ContactAddresses {
    fn name(&self) -> &'static str {
        "contact addresses"
    }

    fn hooks(&self) -> Hooks {
        Hooks::NONE
    }

    fn server_info_forms(&self, host: &str) -> Vec<Element> {
        self.hosts
            .get(host)
            .map(|f| f.clone().into())
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_per_host_with_its_lists() {
        let lists = vec![
            (
                "abuse-addresses".into(),
                vec!["mailto:abuse@a.example".into()],
            ),
            (
                "status-addresses".into(),
                vec!["https://status.a.example/".into()],
            ),
        ];
        let m = ContactAddresses::new([("a.example".to_string(), lists)]);
        assert!(m.server_info_forms("b.example").is_empty());
        let forms = m.server_info_forms("a.example");
        let form = DataForm::try_from(forms[0].clone()).unwrap();
        assert_eq!(form.form_type(), Some(NS_SERVER_INFO));
        let status = form
            .fields
            .iter()
            .find(|f| f.var.as_deref() == Some("status-addresses"));
        assert_eq!(status.unwrap().values, ["https://status.a.example/"]);
    }
}
