//! A grant's write, as data: a claim (a conditional statement that spends a
//! code or a refresh token, or stores a new code) and what follows it only
//! if the claim changed a row (the tokens it issues, their grant). Built
//! once, from the domain's values, and run by each backend its own way:
//! PostgreSQL as one statement of data-modifying CTEs, SQLite statement by
//! statement inside the writer's batch, on the connection's own thread.
//!
//! Placeholders are numbered (`$n`, which both backends read), since the
//! parts share one list of arguments; the values are plain (integers,
//! text, bytes), so both sqlx and rusqlite bind them.

use velocity_domain::oauth::{AuthorizationCode, OAuthToken, TokenKind, TokenSeed};

use crate::rows;

/// A grant's row exists already when its family refreshes: a use, which
/// records the scopes (a refresh may narrow them) and the new expiry. Its
/// creation time stays.
const GRANT_USED: &str = " ON CONFLICT (id) DO UPDATE SET scopes = excluded.scopes, \
     last_used_at = excluded.last_used_at, expires_at = excluded.expires_at";

/// One argument of a [`Claim`]. Integers may be NULL (a time not yet set);
/// nothing else in our schema is.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Value {
    Integer(Option<i64>),
    Text(String),
    Bytes(Vec<u8>),
}

impl From<i64> for Value {
    fn from(value: i64) -> Self {
        Value::Integer(Some(value))
    }
}

impl From<Option<i64>> for Value {
    fn from(value: Option<i64>) -> Self {
        Value::Integer(value)
    }
}

impl From<&str> for Value {
    fn from(value: &str) -> Self {
        Value::Text(value.to_owned())
    }
}

impl From<&[u8]> for Value {
    fn from(value: &[u8]) -> Self {
        Value::Bytes(value.to_vec())
    }
}

/// Text and bytes are hashes, ids and a PKCE challenge: kept out of
/// `Debug`, as `SecretHash` keeps its own, so no log line carries them.
impl std::fmt::Debug for Value {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Value::Integer(v) => write!(f, "Integer({v:?})"),
            Value::Text(v) => write!(f, "Text({} bytes)", v.len()),
            Value::Bytes(v) => write!(f, "Bytes({} bytes)", v.len()),
        }
    }
}

/// A claim and what it issues: see the module's documentation.
#[derive(Debug)]
pub(crate) struct Claim {
    /// Names the row in conflict and reference errors.
    pub(crate) what: &'static str,
    /// The conditional statement, without `RETURNING`.
    pub(crate) claim: String,
    /// Inserts run in order, each only if the claim changed a row.
    pub(crate) then: Vec<Then>,
    /// `$1`, `$2`, …, in order.
    pub(crate) values: Vec<Value>,
    /// What the claim spends and the grant it writes to: claims sharing a
    /// key never share a PostgreSQL statement (`crate::postgres::claims`).
    pub(crate) keys: Vec<Key>,
}

/// An insert that follows a claim, kept in parts: each backend makes it
/// conditional on the claim its own way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Then {
    /// `INSERT INTO <table> (<columns>)`.
    pub(crate) into: String,
    pub(crate) rows: Rows,
    /// An `ON CONFLICT` clause, or empty.
    pub(crate) tail: String,
}

/// What an insert inserts.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// Rows given in full, `($1, $2, …)` each.
    Values(Vec<String>),
    /// A `SELECT` with no `WHERE` clause (read from the claimed row).
    Select(String),
}

impl Then {
    /// The insert as one `INSERT … SELECT …` followed by `condition`, a
    /// `WHERE` clause (which the tail, if any, follows).
    pub(crate) fn select_where(&self, condition: &str) -> String {
        let Then { into, rows, tail } = self;
        match rows {
            Rows::Values(rows) => format!(
                "{into} SELECT * FROM (VALUES {}) AS issued {condition}{tail}",
                rows.join(", ")
            ),
            Rows::Select(select) => format!("{into} {select} {condition}{tail}"),
        }
    }
}

/// A row a claim spends or writes, by kind and identity.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    Code(Vec<u8>),
    Token(String),
    Grant(String),
}

/// Hashes and ids, as the values: kept out of logs.
impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Key::Code(_) => "Key::Code",
            Key::Token(_) => "Key::Token",
            Key::Grant(_) => "Key::Grant",
        })
    }
}

impl Claim {
    pub(crate) fn new(what: &'static str) -> Self {
        Claim {
            what,
            claim: String::new(),
            then: Vec::new(),
            values: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// Records that the claim spends or writes `key`.
    pub(crate) fn touching(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// Adds `value` to the arguments; its placeholder.
    pub(crate) fn bind(&mut self, value: impl Into<Value>) -> String {
        self.values.push(value.into());
        format!("${}", self.values.len())
    }

    /// Sets the claim and, if it wins, stores `tokens` and records their
    /// grant.
    pub(crate) fn issuing(mut self, claim: String, tokens: &[OAuthToken]) -> Self {
        self.claim = claim;
        if let Some(token) = tokens.first() {
            self.keys
                .push(Key::Grant(token.family_id.as_str().to_owned()));
        }
        if !tokens.is_empty() {
            let insert = self.tokens(tokens);
            self.then.push(insert);
        }
        if let Some(grant) = self.grant(tokens) {
            self.then.push(grant);
        }
        self
    }

    /// Stores a new code: a claim that always changes its row, unless the
    /// code is already there (a conflict) or names no app or user.
    pub(crate) fn new_code(code: &AuthorizationCode) -> Self {
        let mut claim = Claim::new("code").touching(Key::Code(code.hash.as_bytes().to_vec()));
        let values = [
            claim.bind(code.hash.as_bytes().as_slice()),
            claim.bind(code.client_id.as_str()),
            claim.bind(code.redirect_uri.as_str()),
            claim.bind(code.user_id.as_str()),
            claim.bind(code.workspace_id.as_str()),
            claim.bind(i64::from(code.scopes.bits())),
            claim.bind(code.code_challenge.as_str()),
            claim.bind(code.family_id.as_str()),
            claim.bind(code.created_at.0),
            claim.bind(code.expires_at.0),
            claim.bind(rows::ms(code.used_at)),
        ];
        claim.claim = format!(
            "INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, user_id, \
             workspace_id, scopes, code_challenge, family_id, created_at, expires_at, used_at) \
             VALUES ({})",
            values.join(", ")
        );
        claim
    }

    /// The insert of the tokens, one row each.
    fn tokens(&mut self, tokens: &[OAuthToken]) -> Then {
        let rows: Vec<String> = tokens
            .iter()
            .map(|token| {
                let values = [
                    self.bind(token.id.as_str()),
                    self.bind(token.hash.as_bytes().as_slice()),
                    self.bind(token.kind.as_str()),
                    self.bind(token.family_id.as_str()),
                    self.bind(token.client_id.as_str()),
                    self.bind(token.user_id.as_str()),
                    self.bind(token.workspace_id.as_str()),
                    self.bind(i64::from(token.scopes.bits())),
                    self.bind(token.created_at.0),
                    self.bind(token.expires_at.0),
                    self.bind(rows::ms(token.revoked_at)),
                    self.bind(rows::ms(token.rotated_at)),
                ];
                format!("({})", values.join(", "))
            })
            .collect();
        Then {
            into: "INSERT INTO oauth_tokens (id, token_hash, kind, family_id, client_id, \
                   user_id, workspace_id, scopes, created_at, expires_at, revoked_at, rotated_at)"
                .to_owned(),
            rows: Rows::Values(rows),
            tail: String::new(),
        }
    }

    /// The grant the tokens belong to, from their refresh token: made by the
    /// code's redemption, and each refresh records a use (its scopes, which
    /// a refresh may narrow, and its new expiry). Its creation time stays.
    /// `None` without a refresh token.
    fn grant(&mut self, tokens: &[OAuthToken]) -> Option<Then> {
        let refresh = tokens.iter().find(|t| t.kind == TokenKind::Refresh)?;
        let values = [
            self.bind(refresh.family_id.as_str()),
            self.bind(refresh.client_id.as_str()),
            self.bind(refresh.user_id.as_str()),
            self.bind(refresh.workspace_id.as_str()),
            self.bind(i64::from(refresh.scopes.bits())),
            self.bind(refresh.created_at.0),
            self.bind(refresh.created_at.0),
            self.bind(refresh.expires_at.0),
        ];
        Some(Then {
            into: "INSERT INTO oauth_grants (id, client_id, user_id, workspace_id, scopes, \
                   created_at, last_used_at, expires_at)"
                .to_owned(),
            rows: Rows::Values(vec![format!("({})", values.join(", "))]),
            tail: GRANT_USED.to_owned(),
        })
    }

    /// Sets the claim, on the code whose hash is `hash` (a placeholder),
    /// and, if it wins, stores a token for each of `seeds`, created `at`
    /// (a placeholder), with the code's family, owner and scopes, and makes
    /// their grant: all read from the code's row, which the caller has not
    /// seen.
    pub(crate) fn issuing_from_code(
        mut self,
        claim: String,
        hash: &str,
        at: &str,
        seeds: &[TokenSeed],
    ) -> Self {
        self.claim = claim;
        let code = format!(
            "(SELECT family_id, client_id, user_id, workspace_id, scopes \
             FROM oauth_codes WHERE code_hash = {hash}) AS code"
        );
        let rows: Vec<String> = seeds
            .iter()
            .map(|seed| {
                let values = [
                    self.bind(seed.id.as_str()),
                    self.bind(seed.hash.as_bytes().as_slice()),
                    self.bind(seed.kind.as_str()),
                    self.bind(seed.expires_at.0),
                ];
                format!("({})", values.join(", "))
            })
            .collect();
        // Both backends name a VALUES list's columns column1, column2, …
        self.then.push(Then {
            into: "INSERT INTO oauth_tokens (id, token_hash, kind, family_id, client_id, \
                   user_id, workspace_id, scopes, created_at, expires_at)"
                .to_owned(),
            rows: Rows::Select(format!(
                "SELECT issued.column1, issued.column2, issued.column3, code.family_id, \
                 code.client_id, code.user_id, code.workspace_id, code.scopes, {at}, \
                 issued.column4 FROM (VALUES {}) AS issued CROSS JOIN {code}",
                rows.join(", ")
            )),
            tail: String::new(),
        });
        if let Some(refresh) = seeds.iter().find(|s| s.kind == TokenKind::Refresh) {
            let expires_at = self.bind(refresh.expires_at.0);
            self.then.push(Then {
                into: "INSERT INTO oauth_grants (id, client_id, user_id, workspace_id, scopes, \
                       created_at, last_used_at, expires_at)"
                    .to_owned(),
                rows: Rows::Select(format!(
                    "SELECT code.family_id, code.client_id, code.user_id, code.workspace_id, \
                     code.scopes, {at}, {at}, {expires_at} FROM {code}"
                )),
                tail: GRANT_USED.to_owned(),
            });
        }
        self
    }

    /// Appends the values to `arguments` as sqlx arguments for `DB`, after
    /// what they hold: a statement of several claims numbers each one's
    /// after the last's. The first that fails to encode is the error (the
    /// statement must then not run).
    pub(crate) fn add_arguments<DB>(
        &self,
        arguments: &mut DB::Arguments,
    ) -> Result<(), sqlx::error::BoxDynError>
    where
        DB: sqlx::Database,
        Option<i64>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        String: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        Vec<u8>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    {
        use sqlx::Arguments as _;
        for value in &self.values {
            match value {
                Value::Integer(v) => arguments.add(*v)?,
                Value::Text(v) => arguments.add(v.clone())?,
                Value::Bytes(v) => arguments.add(v.clone())?,
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_count_in_binding_order() {
        let mut claim = Claim::new("code");
        let first = claim.bind(7_i64);
        let second = claim.bind("x");
        let third = claim.bind(None::<i64>);
        assert_eq!(
            (first.as_str(), second.as_str(), third.as_str()),
            ("$1", "$2", "$3")
        );
        assert_eq!(
            claim.values,
            vec![
                Value::Integer(Some(7)),
                Value::Text("x".into()),
                Value::Integer(None)
            ]
        );
    }
}
