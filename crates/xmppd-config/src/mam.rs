//! `[mam]`: the message archive (XEP-0313) of every account.

use std::time::Duration;

use serde::Deserialize;

use crate::{in_range, ConfigError};

/// The default retention: a year. Long enough that a user who sets up a new device, or
/// returns from a long absence, still finds the conversations that matter to them; short
/// enough that the server does not keep everyone's messages forever by default (data
/// minimisation) and that the archive's size stays bounded by a year of traffic.
pub const DEFAULT_RETENTION_DAYS: f64 = 365.0;

/// The archiving default of an account that set no preferences (XEP-0441).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MamDefault {
    /// Every conversation.
    #[default]
    Always,
    /// Conversations with contacts in the roster.
    Roster,
    /// None.
    Never,
}

/// `[mam]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MamSection {
    pub enabled: bool,
    /// Messages older than this many days are deleted; 0 keeps them. Fractions are allowed.
    pub retention_days: f64,
    /// Bytes of stanzas all archives together may hold; 0: no cap.
    pub max_bytes: u64,
    pub default: MamDefault,
    /// Archive chat markers (XEP-0333) that carry no body.
    pub archive_markers: bool,
    /// Seconds between two runs of the retention job.
    pub purge_interval_secs: u64,
    /// Messages the retention job deletes per transaction.
    pub purge_batch: u64,
}

impl Default for MamSection {
    fn default() -> Self {
        MamSection {
            enabled: true,
            retention_days: DEFAULT_RETENTION_DAYS,
            max_bytes: 0,
            default: MamDefault::Always,
            archive_markers: false,
            purge_interval_secs: 3600,
            purge_batch: 200,
        }
    }
}

/// The checked `[mam]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MamSettings {
    pub enabled: bool,
    /// `None`: kept until removed otherwise.
    pub retention: Option<Duration>,
    /// `None`: no cap.
    pub max_bytes: Option<u64>,
    pub default: MamDefault,
    pub archive_markers: bool,
    pub purge_interval: Duration,
    pub purge_batch: usize,
}

impl MamSection {
    pub(crate) fn validate(
        &self,
        fail: &dyn Fn(&str, String) -> ConfigError,
    ) -> Result<MamSettings, ConfigError> {
        let days = self.retention_days;
        if !days.is_finite() || !(0.0..=36_500.0).contains(&days) {
            return Err(fail(
                "mam.retention_days",
                format!("{days} is out of range (0 to 36500)"),
            ));
        }
        let interval = in_range(self.purge_interval_secs, 1, 7 * 86_400)
            .map_err(|why| fail("mam.purge_interval_secs", why))?;
        let batch =
            in_range(self.purge_batch, 1, 100_000).map_err(|why| fail("mam.purge_batch", why))?;
        Ok(MamSettings {
            enabled: self.enabled,
            // Whole seconds (at least one): finer is meaningless for a job that runs at most
            // every second, and the value then survives being written back as days.
            retention: (days > 0.0)
                .then(|| Duration::from_secs((days * 86_400.0).round().max(1.0) as u64)),
            max_bytes: (self.max_bytes > 0).then_some(self.max_bytes),
            default: self.default,
            archive_markers: self.archive_markers,
            purge_interval: Duration::from_secs(interval as u64),
            purge_batch: batch,
        })
    }
}
