//! `INSERT` statements written as (column, value) pairs: each column sits
//! on one line with what is bound to it, and no placeholder is counted by
//! hand.

use sqlx::error::BoxDynError;
use sqlx::query::Query;
use sqlx::{Arguments, Database, Encode, IntoArguments, Type};

/// `INSERT INTO <table> (<columns>) VALUES (<placeholders>)`, built one
/// column at a time, with the backend's own placeholder syntax.
pub(crate) struct Insert<DB: Database> {
    table: &'static str,
    columns: Vec<&'static str>,
    placeholders: String,
    arguments: DB::Arguments,
    /// The first value that could not be encoded.
    error: Option<BoxDynError>,
    /// An `ON CONFLICT …` clause, when a conflict is not an error.
    on_conflict: Option<&'static str>,
}

impl<DB: Database> Insert<DB> {
    pub(crate) fn into(table: &'static str) -> Self {
        Insert {
            table,
            columns: Vec::new(),
            placeholders: String::new(),
            arguments: DB::Arguments::default(),
            error: None,
            on_conflict: None,
        }
    }

    /// Appends `ON CONFLICT <clause>` (an upsert, or DO NOTHING).
    pub(crate) fn on_conflict(mut self, clause: &'static str) -> Self {
        self.on_conflict = Some(clause);
        self
    }

    /// Adds `column`, bound to `value`.
    pub(crate) fn value<'t, T>(mut self, column: &'static str, value: T) -> Self
    where
        T: Encode<'t, DB> + Type<DB>,
    {
        if !self.columns.is_empty() {
            self.placeholders.push_str(", ");
        }
        self.columns.push(column);
        if let Err(err) = self.arguments.add(value) {
            self.error.get_or_insert(err);
        }
        // Writing into a String cannot fail.
        let _ = self.arguments.format_placeholder(&mut self.placeholders);
        self
    }

    /// The statement, or the error of the first value that failed to encode.
    pub(crate) fn query<'q>(self) -> Result<Query<'q, DB, DB::Arguments>, sqlx::Error>
    where
        DB::Arguments: IntoArguments<DB>,
    {
        if let Some(err) = self.error {
            return Err(sqlx::Error::Encode(err));
        }
        let mut sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            self.table,
            self.columns.join(", "),
            self.placeholders
        );
        if let Some(clause) = self.on_conflict {
            sql.push_str(" ON CONFLICT ");
            sql.push_str(clause);
        }
        Ok(sqlx::query_with(sqlx::AssertSqlSafe(sql), self.arguments))
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Execute;

    use super::Insert;

    fn sql<DB: sqlx::Database>(insert: Insert<DB>) -> String
    where
        DB::Arguments: sqlx::IntoArguments<DB>,
    {
        match insert.query() {
            Ok(query) => query.sql().as_str().to_owned(),
            Err(err) => format!("error: {err}"),
        }
    }

    #[test]
    fn columns_and_placeholders_line_up() {
        let insert = Insert::<sqlx::Postgres>::into("t")
            .value("a", 1_i64)
            .value("b", "two")
            .value("c", None::<Vec<u8>>);
        assert_eq!(sql(insert), "INSERT INTO t (a, b, c) VALUES ($1, $2, $3)");
        let insert = Insert::<sqlx::Sqlite>::into("t")
            .value("a", 1_i64)
            .value("b", "two");
        assert_eq!(sql(insert), "INSERT INTO t (a, b) VALUES (?, ?)");
        let insert = Insert::<sqlx::Sqlite>::into("t")
            .value("a", 1_i64)
            .on_conflict("(a) DO NOTHING");
        assert_eq!(
            sql(insert),
            "INSERT INTO t (a) VALUES (?) ON CONFLICT (a) DO NOTHING"
        );
    }
}
