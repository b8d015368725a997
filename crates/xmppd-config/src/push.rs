//! `[push]`: push notifications (XEP-0357) to the app servers of accounts' devices.

use serde::Deserialize;

use crate::{in_range, ConfigError};

/// `[push]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushSection {
    /// Put the message's body in the notification.
    pub include_body: bool,
    /// Put the message's sender in the notification.
    pub include_sender: bool,
    /// Failures in a row after which an app server's registration is removed.
    pub max_errors: u64,
}

impl Default for PushSection {
    fn default() -> Self {
        // Privacy first: an app server is usually run by a third party (the app's vendor),
        // which then learns neither who writes to the user nor what.
        PushSection {
            include_body: false,
            include_sender: false,
            max_errors: 3,
        }
    }
}

/// The checked `[push]` section.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushSettings {
    pub include_body: bool,
    pub include_sender: bool,
    pub max_errors: u32,
}

impl PushSection {
    pub(crate) fn validate(
        &self,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<PushSettings, ConfigError> {
        let max_errors =
            in_range(self.max_errors, 1, 1000).map_err(|why| fail("push.max_errors", why))?;
        Ok(PushSettings {
            include_body: self.include_body,
            include_sender: self.include_sender,
            max_errors: max_errors as u32,
        })
    }
}
