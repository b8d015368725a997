//! `[vcard]` and `[private]`: the personal data an account stores on the server (XEP-0054
//! vCards, XEP-0049 private XML), each bounded in size.

use serde::Deserialize;

use crate::{in_range, ConfigError};

/// `[vcard]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VCardSection {
    /// Bytes of one account's vCard, serialised.
    pub max_bytes: u64,
}

impl Default for VCardSection {
    fn default() -> Self {
        // Room for a photo of some tens of kilobytes (base64), the usual avatar.
        VCardSection { max_bytes: 131_072 }
    }
}

/// `[private]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PrivateSection {
    /// Bytes of one stored namespace's element, serialised.
    pub max_bytes: u64,
}

impl Default for PrivateSection {
    fn default() -> Self {
        PrivateSection { max_bytes: 65_536 }
    }
}

/// The checked `[vcard]` and `[private]` sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PersonalSettings {
    pub vcard_max_bytes: usize,
    pub private_max_bytes: usize,
}

pub(crate) fn validate_personal(
    vcard: &VCardSection,
    private: &PrivateSection,
    fail: &dyn Fn(&str, String) -> ConfigError,
) -> Result<PersonalSettings, ConfigError> {
    let vcard_max_bytes =
        in_range(vcard.max_bytes, 1024, 16_777_216).map_err(|why| fail("vcard.max_bytes", why))?;
    let private_max_bytes = in_range(private.max_bytes, 1024, 16_777_216)
        .map_err(|why| fail("private.max_bytes", why))?;
    Ok(PersonalSettings {
        vcard_max_bytes,
        private_max_bytes,
    })
}
