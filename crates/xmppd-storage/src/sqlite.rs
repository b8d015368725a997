//! SQLite implementation (to be written)
pub struct SqliteStore;
