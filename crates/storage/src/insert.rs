//! `INSERT` statements written as (column, value) pairs: each column sits
//! on one line with what is bound to it, and no placeholder is counted by
//! hand. Several rows go in one statement with [`Insert::row`].

use sqlx::error::BoxDynError;
use sqlx::query::Query;
use sqlx::{Arguments, Database, Encode, IntoArguments, Type};

/// `INSERT INTO <table> (<columns>) VALUES (<placeholders>)`, built one
/// column at a time, with the backend's own placeholder syntax.
pub(crate) struct Insert<DB: Database> {
    table: &'static str,
    /// The first row's columns, which every row repeats in order.
    columns: Vec<&'static str>,
    /// `(…), (…)` of the rows before the current one.
    done: String,
    /// The current row's placeholders, and how many columns it has so far.
    placeholders: String,
    filled: usize,
    arguments: DB::Arguments,
    /// The first value that could not be encoded.
    error: Option<BoxDynError>,
}

impl<DB: Database> Insert<DB> {
    pub(crate) fn into(table: &'static str) -> Self {
        Insert {
            table,
            columns: Vec::new(),
            done: String::new(),
            placeholders: String::new(),
            filled: 0,
            arguments: DB::Arguments::default(),
            error: None,
        }
    }

    /// Adds `column`, bound to `value`.
    pub(crate) fn value<'t, T>(mut self, column: &'static str, value: T) -> Self
    where
        T: Encode<'t, DB> + Type<DB>,
    {
        if self.filled > 0 {
            self.placeholders.push_str(", ");
        }
        if self.done.is_empty() {
            self.columns.push(column);
        } else if self.columns.get(self.filled) != Some(&column) {
            self.error
                .get_or_insert_with(|| format!("{column} out of its first row's order").into());
        }
        self.filled += 1;
        if let Err(err) = self.arguments.add(value) {
            self.error.get_or_insert(err);
        }
        // Writing into a String cannot fail.
        let _ = self.arguments.format_placeholder(&mut self.placeholders);
        self
    }

    /// Ends the current row; the values after it make the next one, with
    /// the same columns in the same order.
    pub(crate) fn row(mut self) -> Self {
        if !self.done.is_empty() {
            self.done.push_str(", ");
        }
        self.done.push('(');
        self.done.push_str(&self.placeholders);
        self.done.push(')');
        self.placeholders.clear();
        self.filled = 0;
        self
    }

    /// The statement, or the error of the first value that failed to encode.
    pub(crate) fn query<'q>(mut self) -> Result<Query<'q, DB, DB::Arguments>, sqlx::Error>
    where
        DB::Arguments: IntoArguments<DB>,
    {
        if self.filled > 0 || self.done.is_empty() {
            self = self.row();
        }
        if let Some(err) = self.error {
            return Err(sqlx::Error::Encode(err));
        }
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.table,
            self.columns.join(", "),
            self.done
        );
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
    }

    #[test]
    fn rows_repeat_the_first_rows_columns() {
        let insert = Insert::<sqlx::Postgres>::into("t")
            .value("a", 1_i64)
            .value("b", "two")
            .row()
            .value("a", 3_i64)
            .value("b", "four");
        assert_eq!(
            sql(insert),
            "INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"
        );
        let swapped = Insert::<sqlx::Postgres>::into("t")
            .value("a", 1_i64)
            .value("b", "two")
            .row()
            .value("b", "four")
            .value("a", 3_i64);
        assert!(sql(swapped).starts_with("error:"));
    }
}
