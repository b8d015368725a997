//! The copy's target on PostgreSQL.

use std::collections::BTreeSet;

use async_trait::async_trait;
use bytes::BytesMut;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::{Column, Kind, Target, Value, PROGRESS};
use crate::postgres::pg_err;
use crate::{PgStore, Result};

pub(super) struct PgTarget {
    client: deadpool_postgres::Client,
}

impl PgTarget {
    pub(super) async fn new(store: &PgStore) -> Result<PgTarget> {
        Ok(PgTarget {
            client: store.client().await?,
        })
    }
}

/// A PostgreSQL identifier, quoted.
fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn kind(data_type: &str, udt: &str) -> Kind {
    match data_type {
        "smallint" | "integer" | "bigint" => Kind::Int,
        "boolean" => Kind::Bool,
        "real" | "double precision" => Kind::Float,
        "text" | "character varying" | "character" => Kind::Text,
        "bytea" => Kind::Bytes,
        "ARRAY" if matches!(udt, "_text" | "_varchar") => Kind::Texts,
        other => Kind::Other(other.to_owned()),
    }
}

#[async_trait]
impl Target for PgTarget {
    async fn columns(&mut self, table: &str) -> Result<Vec<Column>> {
        let rows = self
            .client
            .query(
                "SELECT column_name::text, data_type::text, udt_name::text, is_nullable::text,
                        column_default::text, is_identity::text, is_generated::text
                 FROM information_schema.columns
                 WHERE table_schema = current_schema() AND table_name = $1
                 ORDER BY ordinal_position",
                &[&table],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows
            .iter()
            .map(|r| {
                let default: Option<String> = r.get(4);
                let identity = r.get::<_, String>(5) == "YES";
                let generated = r.get::<_, String>(6) != "NEVER";
                let serial = default
                    .as_deref()
                    .is_some_and(|d| d.starts_with("nextval("));
                Column {
                    name: r.get(0),
                    kind: kind(&r.get::<_, String>(1), &r.get::<_, String>(2)),
                    required: r.get::<_, String>(3) == "NO"
                        && default.is_none()
                        && !identity
                        && !generated,
                    auto: identity || serial,
                    generated,
                }
            })
            .collect())
    }

    async fn keys(&mut self, table: &str) -> Result<Vec<Vec<String>>> {
        let rows = self
            .client
            .query(
                "SELECT array_agg(a.attname::text ORDER BY k.ord)
                 FROM pg_index i
                 JOIN pg_class t ON t.oid = i.indrelid
                 JOIN pg_namespace n ON n.oid = t.relnamespace
                 CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, ord)
                 JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
                 WHERE t.relname = $1 AND n.nspname = current_schema() AND i.indisunique
                   AND i.indpred IS NULL AND i.indexprs IS NULL
                 GROUP BY i.indexrelid, i.indisprimary
                 ORDER BY i.indisprimary DESC, i.indexrelid",
                &[&table],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn references(&mut self) -> Result<Vec<(String, String)>> {
        let rows = self
            .client
            .query(
                "SELECT c.relname::text, p.relname::text
                 FROM pg_constraint f
                 JOIN pg_class c ON c.oid = f.conrelid
                 JOIN pg_class p ON p.oid = f.confrelid
                 JOIN pg_namespace n ON n.oid = c.relnamespace
                 WHERE f.contype = 'f' AND n.nspname = current_schema()",
                &[],
            )
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn schemas(&mut self) -> Result<Vec<String>> {
        let rows = self
            .client
            .query("SELECT name FROM xmppd_schemas ORDER BY name", &[])
            .await
            .map_err(pg_err)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn count(&mut self, table: &str) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM {}", quote(table));
        let row = self.client.query_one(&sql, &[]).await.map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn count_groups(&mut self, column: &str) -> Result<u64> {
        let sql = format!(
            "SELECT COALESCE(SUM(cardinality({})), 0)::bigint FROM roster",
            quote(column)
        );
        let row = self.client.query_one(&sql, &[]).await.map_err(pg_err)?;
        Ok(row.get::<_, i64>(0) as u64)
    }

    async fn completed(&mut self) -> Result<Option<BTreeSet<String>>> {
        let exists: bool = self
            .client
            .query_one(
                &format!("SELECT to_regclass('{PROGRESS}') IS NOT NULL"),
                &[],
            )
            .await
            .map_err(pg_err)?
            .get(0);
        if !exists {
            return Ok(None);
        }
        let rows = self
            .client
            .query(&format!("SELECT table_name FROM {PROGRESS}"), &[])
            .await
            .map_err(pg_err)?;
        Ok(Some(rows.iter().map(|r| r.get(0)).collect()))
    }

    async fn start(&mut self) -> Result<()> {
        self.client
            .batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {PROGRESS} (
                     table_name TEXT PRIMARY KEY,
                     source_rows BIGINT NOT NULL
                 )"
            ))
            .await
            .map_err(pg_err)
    }

    async fn complete(&mut self, table: &str, rows: u64) -> Result<()> {
        self.client
            .execute(
                &format!(
                    "INSERT INTO {PROGRESS} (table_name, source_rows) VALUES ($1, $2)
                     ON CONFLICT (table_name) DO UPDATE SET source_rows = excluded.source_rows"
                ),
                &[&table, &(rows as i64)],
            )
            .await
            .map_err(pg_err)?;
        Ok(())
    }

    async fn upsert(
        &mut self,
        table: &str,
        columns: &[&Column],
        key: &[String],
        rows: Vec<Vec<Value>>,
    ) -> Result<()> {
        let names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        let mut values = Vec::with_capacity(rows.len());
        let mut n = 0;
        for _ in &rows {
            let row: Vec<String> = (0..columns.len())
                .map(|_| {
                    n += 1;
                    format!("${n}")
                })
                .collect();
            values.push(format!("({})", row.join(", ")));
        }
        let updates: Vec<String> = (columns.iter())
            .filter(|c| !key.contains(&c.name))
            .map(|c| format!("{0} = EXCLUDED.{0}", quote(&c.name)))
            .collect();
        let on_conflict = match updates.is_empty() {
            true => "DO NOTHING".to_owned(),
            false => format!("DO UPDATE SET {}", updates.join(", ")),
        };
        // An identity column `GENERATED ALWAYS` takes the copied ids only when told to.
        let overriding = match columns.iter().any(|c| c.auto) {
            true => "OVERRIDING SYSTEM VALUE",
            false => "",
        };
        let key: Vec<String> = key.iter().map(|k| quote(k)).collect();
        let sql = format!(
            "INSERT INTO {} ({}) {overriding} VALUES {} ON CONFLICT ({}) {on_conflict}",
            quote(table),
            names.join(", "),
            values.join(", "),
            key.join(", ")
        );
        let params: Vec<&(dyn ToSql + Sync)> = (rows.iter().flatten())
            .map(|v| v as &(dyn ToSql + Sync))
            .collect();
        let tx = self.client.transaction().await.map_err(pg_err)?;
        tx.execute(&sql, &params)
            .await
            .map_err(|e| in_table(table, e))?;
        tx.commit().await.map_err(pg_err)
    }

    async fn advance_sequences(
        &mut self,
        table: &str,
        columns: &[Column],
        floor: i64,
    ) -> Result<()> {
        for column in columns.iter().filter(|c| c.auto) {
            let sequence: Option<String> = self
                .client
                .query_one(
                    "SELECT pg_get_serial_sequence($1, $2)",
                    &[&quote(table), &column.name],
                )
                .await
                .map_err(pg_err)?
                .get(0);
            let Some(sequence) = sequence else { continue };
            let max: i64 = self
                .client
                .query_one(
                    &format!(
                        "SELECT COALESCE(MAX({})::bigint, 0) FROM {}",
                        quote(&column.name),
                        quote(table)
                    ),
                    &[],
                )
                .await
                .map_err(pg_err)?
                .get(0);
            let next = max.max(floor);
            if next > 0 {
                // Never backwards: a sequence that is further already stays where it is.
                self.client
                    .query_one(
                        &format!(
                            "SELECT setval($1::text::regclass, GREATEST($2::bigint, last_value))
                             FROM {sequence}"
                        ),
                        &[&sequence, &next],
                    )
                    .await
                    .map_err(pg_err)?;
            }
        }
        Ok(())
    }

    fn groups(&self, groups: Vec<String>) -> Value {
        Value::Texts(groups)
    }
}

fn in_table(table: &str, e: tokio_postgres::Error) -> crate::StorageError {
    crate::StorageError::Backend(format!("copying into {table}: {}", pg_err(e)))
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Bool(b) => b.to_sql(ty, out),
            Value::Float(f) => match *ty {
                Type::FLOAT4 => (*f as f32).to_sql(ty, out),
                _ => f.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Bytes(b) => b.as_slice().to_sql(ty, out),
            Value::Texts(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // The copy chose the value's variant from the column's type; a mismatch left is the
        // server's error.
        true
    }

    to_sql_checked!();
}
