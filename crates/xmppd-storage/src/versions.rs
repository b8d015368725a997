//! The bookkeeping of schema versions every engine shares: `xmppd_schemas` holds the version
//! of each named [`Schema`]; at start-up the missing migrations are applied, and a database
//! migrated by a newer xmppd is refused, never downgraded.

use crate::{Result, Schema, StorageError};

/// The migrations of `schema` still to apply to a database at version `current`, as
/// `(version they lead to, SQL)`; an error when `current` is newer than this build knows.
pub(crate) fn pending(schema: Schema, current: i64) -> Result<Vec<(usize, &'static str)>> {
    let known = schema.migrations.len();
    let current = usize::try_from(current)
        .ok()
        .filter(|v| *v <= known)
        .ok_or_else(|| {
            StorageError::Backend(format!(
                "schema {} is at version {current}, newer than this xmppd knows ({known})",
                schema.name
            ))
        })?;
    Ok((current..known)
        .map(|i| (i + 1, schema.migrations[i]))
        .collect())
}

/// Logs that `schema` moved from version `from` to its latest.
pub(crate) fn migrated(schema: Schema, from: usize) {
    tracing::info!(
        schema = schema.name,
        from,
        to = schema.migrations.len(),
        "schema migrated"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Schema = Schema {
        name: "s",
        migrations: &["a", "b"],
    };

    #[test]
    fn what_is_left_to_apply_and_what_is_refused() {
        assert_eq!(pending(S, 0).unwrap(), [(1, "a"), (2, "b")]);
        assert_eq!(pending(S, 1).unwrap(), [(2, "b")]);
        assert!(pending(S, 2).unwrap().is_empty());
        for newer in [3, -1] {
            let err = pending(S, newer).unwrap_err().to_string();
            assert!(err.contains("newer than this xmppd knows (2)"), "{err}");
        }
    }
}
