//! The copy's target on MariaDB.

use std::collections::BTreeSet;

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Params, TxOpts};

use super::{Column, Kind, Target, Value, PROGRESS};
use crate::mysql::my_err;
use crate::mysql::roster::encode_groups;
use crate::{MysqlStore, Result, StorageError};

pub(super) struct MyTarget {
    conn: Conn,
}

impl MyTarget {
    pub(super) async fn new(store: &MysqlStore) -> Result<MyTarget> {
        Ok(MyTarget {
            conn: store.conn().await?,
        })
    }
}

/// A MariaDB identifier, quoted.
fn quote(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

fn kind(data_type: &str) -> Kind {
    match data_type {
        "tinyint" | "smallint" | "mediumint" | "int" | "bigint" => Kind::Int,
        "float" | "double" => Kind::Float,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" => Kind::Text,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => Kind::Bytes,
        other => Kind::Other(other.to_owned()),
    }
}

fn to_my(value: Value) -> Result<mysql_async::Value> {
    use mysql_async::Value as V;
    Ok(match value {
        Value::Null => V::NULL,
        Value::Int(i) => V::Int(i),
        Value::Bool(b) => V::Int(i64::from(b)),
        Value::Float(f) => V::Double(f),
        Value::Text(s) => V::Bytes(s.into_bytes()),
        Value::Bytes(b) => V::Bytes(b),
        Value::Texts(_) => {
            return Err(StorageError::Backend(
                "a list of texts has no MariaDB column type".into(),
            ))
        }
    })
}

type ColumnRow = (String, String, String, Option<String>, String);

#[async_trait]
impl Target for MyTarget {
    async fn columns(&mut self, table: &str) -> Result<Vec<Column>> {
        let rows: Vec<ColumnRow> = self
            .conn
            .exec(
                "SELECT COLUMN_NAME, DATA_TYPE, IS_NULLABLE, COLUMN_DEFAULT, EXTRA
                 FROM information_schema.COLUMNS
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?
                 ORDER BY ORDINAL_POSITION",
                (table,),
            )
            .await
            .map_err(my_err)?;
        Ok(rows
            .into_iter()
            .map(|(name, data_type, nullable, default, extra)| {
                let extra = extra.to_ascii_lowercase();
                let auto = extra.contains("auto_increment");
                let generated = extra.contains("generated");
                Column {
                    name,
                    kind: kind(&data_type.to_ascii_lowercase()),
                    required: nullable == "NO" && default.is_none() && !auto && !generated,
                    auto,
                    generated,
                }
            })
            .collect())
    }

    async fn keys(&mut self, table: &str) -> Result<Vec<Vec<String>>> {
        let rows: Vec<(String, String)> = self
            .conn
            .exec(
                "SELECT INDEX_NAME, COLUMN_NAME FROM information_schema.STATISTICS
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND NON_UNIQUE = 0
                 ORDER BY INDEX_NAME = 'PRIMARY' DESC, INDEX_NAME, SEQ_IN_INDEX",
                (table,),
            )
            .await
            .map_err(my_err)?;
        let mut keys: Vec<(String, Vec<String>)> = Vec::new();
        for (index, column) in rows {
            match keys.last_mut() {
                Some((name, columns)) if *name == index => columns.push(column),
                _ => keys.push((index, vec![column])),
            }
        }
        Ok(keys.into_iter().map(|(_, columns)| columns).collect())
    }

    async fn references(&mut self) -> Result<Vec<(String, String)>> {
        self.conn
            .query(
                "SELECT TABLE_NAME, REFERENCED_TABLE_NAME
                 FROM information_schema.REFERENTIAL_CONSTRAINTS
                 WHERE CONSTRAINT_SCHEMA = DATABASE()",
            )
            .await
            .map_err(my_err)
    }

    async fn schemas(&mut self) -> Result<Vec<String>> {
        self.conn
            .query("SELECT name FROM xmppd_schemas ORDER BY name")
            .await
            .map_err(my_err)
    }

    async fn count(&mut self, table: &str) -> Result<u64> {
        let n: Option<i64> = self
            .conn
            .query_first(format!("SELECT COUNT(*) FROM {}", quote(table)))
            .await
            .map_err(my_err)?;
        Ok(n.unwrap_or(0) as u64)
    }

    async fn count_groups(&mut self, column: &str) -> Result<u64> {
        let lists: Vec<String> = self
            .conn
            .query(format!("SELECT {} FROM roster", quote(column)))
            .await
            .map_err(my_err)?;
        let mut n = 0;
        for list in lists {
            let groups = crate::mysql::roster::decode_groups(&list)
                .ok_or_else(|| StorageError::Backend("roster: corrupt groups".into()))?;
            n += groups.len() as u64;
        }
        Ok(n)
    }

    async fn completed(&mut self) -> Result<Option<BTreeSet<String>>> {
        let exists: Option<i64> = self
            .conn
            .exec_first(
                "SELECT COUNT(*) FROM information_schema.TABLES
                 WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ?",
                (PROGRESS,),
            )
            .await
            .map_err(my_err)?;
        if exists.unwrap_or(0) == 0 {
            return Ok(None);
        }
        let done: Vec<String> = self
            .conn
            .query(format!("SELECT table_name FROM {PROGRESS}"))
            .await
            .map_err(my_err)?;
        Ok(Some(done.into_iter().collect()))
    }

    async fn start(&mut self) -> Result<()> {
        self.conn
            .query_drop(format!(
                "CREATE TABLE IF NOT EXISTS {PROGRESS} (
                     table_name VARCHAR(255) NOT NULL PRIMARY KEY,
                     source_rows BIGINT NOT NULL
                 ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin"
            ))
            .await
            .map_err(my_err)
    }

    async fn complete(&mut self, table: &str, rows: u64) -> Result<()> {
        self.conn
            .exec_drop(
                format!(
                    "INSERT INTO {PROGRESS} (table_name, source_rows) VALUES (?, ?)
                     ON DUPLICATE KEY UPDATE source_rows = VALUES(source_rows)"
                ),
                (table, rows as i64),
            )
            .await
            .map_err(my_err)
    }

    async fn upsert(
        &mut self,
        table: &str,
        columns: &[&Column],
        key: &[String],
        rows: Vec<Vec<Value>>,
    ) -> Result<()> {
        let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let row = format!("({})", vec!["?"; columns.len()].join(", "));
        let values = vec![row.as_str(); rows.len()].join(", ");
        let mut updates: Vec<String> = (columns.iter())
            .filter(|c| !key.contains(&c.name))
            .map(|c| format!("{0} = VALUES({0})", quote(&c.name)))
            .collect();
        if updates.is_empty() {
            // Every column is the key: a row present is left as it is.
            updates.push(format!("{0} = {0}", quote(&key[0])));
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {values} ON DUPLICATE KEY UPDATE {}",
            quote(table),
            names.join(", "),
            updates.join(", ")
        );
        let params = (rows.into_iter().flatten())
            .map(to_my)
            .collect::<Result<Vec<_>>>()?;
        let mut tx = self
            .conn
            .start_transaction(TxOpts::default())
            .await
            .map_err(my_err)?;
        tx.exec_drop(sql, Params::Positional(params))
            .await
            .map_err(|e| StorageError::Backend(format!("copying into {table}: {}", my_err(e))))?;
        tx.commit().await.map_err(my_err)
    }

    async fn advance_sequences(
        &mut self,
        table: &str,
        columns: &[Column],
        floor: i64,
    ) -> Result<()> {
        // Explicit ids move AUTO_INCREMENT past them already; what SQLite handed out to rows
        // since removed is set here (MariaDB ignores a value below the highest id).
        if floor > 0 && columns.iter().any(|c| c.auto) {
            self.conn
                .query_drop(format!(
                    "ALTER TABLE {} AUTO_INCREMENT = {}",
                    quote(table),
                    floor + 1
                ))
                .await
                .map_err(my_err)?;
        }
        Ok(())
    }

    fn groups(&self, groups: Vec<String>) -> Value {
        Value::Text(encode_groups(&groups.iter().collect::<Vec<_>>()))
    }
}
