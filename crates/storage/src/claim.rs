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
//!
//! A claim's text depends on its shape alone (which statement, the kinds
//! of tokens it issues), never on its values, so each shape's text is
//! rendered once in a process and shared ([`ClaimText`]): rendering it for
//! every grant was a tenth of a refresh grant's instructions.

use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use velocity_domain::oauth::{AuthorizationCode, OAuthToken, TokenKind, TokenSeed};

use crate::rows;

/// A grant's row exists already when its family refreshes: a use, which
/// records the scopes (a refresh may narrow them) and the new expiry. Its
/// creation time stays.
const GRANT_USED: &str = " ON CONFLICT (id) DO UPDATE SET scopes = excluded.scopes, \
     last_used_at = excluded.last_used_at, expires_at = excluded.expires_at";

/// Joined statements kept for each shape: PostgreSQL's are one for each
/// number of claims in a statement and each kind of answer, 32 in all.
const JOINED: usize = 64;

/// Shapes kept rendered. Our statements make a handful (four forms, each
/// issuing an access token and a refresh token or an access token alone);
/// past this, a text is rendered for its claim alone rather than kept.
const SHAPES: usize = 32;

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

/// `$n`: the claim's n-th value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Placeholder(usize);

impl fmt::Display for Placeholder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${}", self.0)
    }
}

/// Which statement a claim makes. With the kinds of tokens it issues and
/// its number of values, all its text depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Form {
    NewCode,
    RedeemCode,
    RedeemPresentedCode,
    RotateRefreshToken,
}

/// A claim and what it issues: see the module's documentation.
#[derive(Debug)]
pub(crate) struct Claim {
    /// Names the row in conflict and reference errors.
    pub(crate) what: &'static str,
    /// Shared by every claim of its shape.
    pub(crate) text: Arc<ClaimText>,
    /// `$1`, `$2`, …, in order.
    pub(crate) values: Vec<Value>,
    /// What the claim spends and the grant it writes to: claims sharing a
    /// key never share a PostgreSQL statement (`crate::postgres::claims`).
    pub(crate) keys: Vec<Key>,
}

/// A claim's statements, shared by every claim of its shape.
#[derive(Debug)]
pub(crate) struct ClaimText {
    /// The conditional statement, without `RETURNING`.
    pub(crate) claim: String,
    /// Inserts run in order, each only if the claim changed a row.
    pub(crate) then: Vec<Then>,
    /// The same as statements of their own, for a backend that runs them
    /// one at a time: made on the first run ([`ClaimText::apart`]).
    apart: OnceLock<Vec<Statement>>,
    /// Statements of several claims of this shape joined, for a backend
    /// that joins them, under its key for each ([`ClaimText::joined`]).
    joined: Mutex<Vec<(usize, Arc<str>)>>,
}

/// One of a claim's statements on its own: its placeholders `?1`, `?2`, …
/// in order of first use, and the claim's value (by index) each takes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Statement {
    pub(crate) sql: String,
    pub(crate) values: Vec<usize>,
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
    /// The insert of the grant the tokens belong to: made by the code's
    /// redemption, and each refresh records a use ([`GRANT_USED`]).
    fn grant(rows: Rows) -> Then {
        Then {
            into: "INSERT INTO oauth_grants (id, client_id, user_id, workspace_id, scopes, \
                   created_at, last_used_at, expires_at)"
                .to_owned(),
            rows,
            tail: GRANT_USED.to_owned(),
        }
    }

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

impl ClaimText {
    pub(crate) fn new(claim: String, then: Vec<Then>) -> Self {
        ClaimText {
            claim,
            then,
            apart: OnceLock::new(),
            joined: Mutex::new(Vec::new()),
        }
    }

    /// The statement `join` makes of claims of this shape under `key` (the
    /// backend's: how many claims, how they answer), made on the first call
    /// for that key. Past [`JOINED`] keys, made each time rather than kept.
    pub(crate) fn joined(&self, key: usize, join: impl FnOnce(&ClaimText) -> String) -> Arc<str> {
        let mut joined = self.joined.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((_, sql)) = joined.iter().find(|(k, _)| *k == key) {
            return sql.clone();
        }
        let sql: Arc<str> = join(self).into();
        if joined.len() < JOINED {
            joined.push((key, sql.clone()));
        }
        sql
    }

    /// The claim's statements as a backend runs them one at a time: `split`
    /// says what they are (each numbering its placeholders as the claim
    /// does, `$n`), on the first call only.
    pub(crate) fn apart(&self, split: impl FnOnce(&ClaimText) -> Vec<String>) -> &[Statement] {
        self.apart
            .get_or_init(|| split(self).iter().map(|sql| Statement::of(sql)).collect())
    }

    /// Whether two claims' statements are the same: always when they share
    /// a shape.
    pub(crate) fn same(a: &Arc<ClaimText>, b: &Arc<ClaimText>) -> bool {
        Arc::ptr_eq(a, b) || (a.claim == b.claim && a.then == b.then)
    }
}

impl Statement {
    /// `sql` with each `$n` made the next `?k` on its first use and the
    /// same `?k` after; `$0`, which names no value, takes none (binding it
    /// fails).
    fn of(sql: &str) -> Self {
        let mut values: Vec<usize> = Vec::new();
        let sql = map_placeholders(sql, |out, n| {
            let value = n.checked_sub(1).unwrap_or(usize::MAX);
            let k = match values.iter().position(|&v| v == value) {
                Some(k) => k,
                None => {
                    values.push(value);
                    values.len() - 1
                }
            };
            out.push('?');
            out.push_str(&(k + 1).to_string());
        });
        Statement { sql, values }
    }
}

/// `sql` with each `$n` replaced by what `write` writes for n; a `$` not
/// followed by digits stays. Our SQL has no other `$` (no dollar quoting,
/// no `$` in names or literals).
pub(crate) fn map_placeholders(sql: &str, mut write: impl FnMut(&mut String, usize)) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut rest = sql;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        match rest[..digits].parse::<usize>() {
            Ok(n) => write(&mut out, n),
            Err(_) => out.push('$'),
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// A shape's text, rendered once.
struct Rendered {
    form: Form,
    kinds: Vec<TokenKind>,
    values: usize,
    text: Arc<ClaimText>,
}

static RENDERED: RwLock<Vec<Rendered>> = RwLock::new(Vec::new());

/// The text of claims of `form` with `values` values issuing tokens of
/// `kinds`: `render`'s, unless a claim of that shape has been rendered.
fn rendered<K>(
    form: Form,
    kinds: K,
    values: usize,
    render: impl FnOnce() -> ClaimText,
) -> Arc<ClaimText>
where
    K: Iterator<Item = TokenKind> + Clone,
{
    let find = |all: &[Rendered]| {
        all.iter()
            .find(|r| {
                r.form == form && r.values == values && r.kinds.iter().copied().eq(kinds.clone())
            })
            .map(|r| r.text.clone())
    };
    if let Some(text) = find(&RENDERED.read().unwrap_or_else(PoisonError::into_inner)) {
        return text;
    }
    let text = Arc::new(render());
    let mut all = RENDERED.write().unwrap_or_else(PoisonError::into_inner);
    if let Some(kept) = find(&all) {
        return kept;
    }
    if all.len() < SHAPES {
        all.push(Rendered {
            form,
            kinds: kinds.collect(),
            values,
            text: text.clone(),
        });
    }
    text
}

/// `a, b, c`.
fn list(placeholders: &[Placeholder]) -> String {
    placeholders
        .iter()
        .map(Placeholder::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A claim being built: its values and keys, before its text.
pub(crate) struct Draft {
    what: &'static str,
    values: Vec<Value>,
    keys: Vec<Key>,
}

impl Claim {
    pub(crate) fn draft(what: &'static str) -> Draft {
        Draft {
            what,
            values: Vec::new(),
            keys: Vec::new(),
        }
    }

    /// Stores a new code: a claim that always changes its row, unless the
    /// code is already there (a conflict) or names no app or user.
    pub(crate) fn new_code(code: &AuthorizationCode) -> Claim {
        let mut draft = Claim::draft("code").touching(Key::Code(code.hash.as_bytes().to_vec()));
        let values = [
            draft.bind(code.hash.as_bytes().as_slice()),
            draft.bind(code.client_id.as_str()),
            draft.bind(code.redirect_uri.as_str()),
            draft.bind(code.user_id.as_str()),
            draft.bind(code.workspace_id.as_str()),
            draft.bind(i64::from(code.scopes.bits())),
            draft.bind(code.code_challenge.as_str()),
            draft.bind(code.family_id.as_str()),
            draft.bind(code.created_at.0),
            draft.bind(code.expires_at.0),
            draft.bind(rows::ms(code.used_at)),
        ];
        draft.finish(Form::NewCode, std::iter::empty(), || {
            ClaimText::new(
                format!(
                    "INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, user_id, \
                     workspace_id, scopes, code_challenge, family_id, created_at, expires_at, \
                     used_at) VALUES ({})",
                    list(&values)
                ),
                Vec::new(),
            )
        })
    }

    /// Appends the values to `arguments` as sqlx arguments for `DB`, after
    /// what they hold: a statement of several claims numbers each one's
    /// after the last's. Encoded from the claim's own values, which stay
    /// for a run claim by claim should the statement be refused. The first
    /// that fails to encode is the error (the statement must then not run).
    pub(crate) fn add_arguments<DB>(
        &self,
        arguments: &mut DB::Arguments,
    ) -> Result<(), sqlx::error::BoxDynError>
    where
        DB: sqlx::Database,
        Option<i64>: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        for<'v> &'v str: sqlx::Encode<'v, DB> + sqlx::Type<DB>,
        for<'v> &'v [u8]: sqlx::Encode<'v, DB> + sqlx::Type<DB>,
    {
        use sqlx::Arguments as _;
        for value in &self.values {
            match value {
                Value::Integer(v) => arguments.add(*v)?,
                Value::Text(v) => arguments.add(v.as_str())?,
                Value::Bytes(v) => arguments.add(v.as_slice())?,
            }
        }
        Ok(())
    }
}

impl Draft {
    /// Records that the claim spends or writes `key`.
    pub(crate) fn touching(mut self, key: Key) -> Self {
        self.keys.push(key);
        self
    }

    /// Adds `value` to the arguments; its placeholder.
    pub(crate) fn bind(&mut self, value: impl Into<Value>) -> Placeholder {
        self.values.push(value.into());
        Placeholder(self.values.len())
    }

    /// The claim, its text `render`'s unless a claim of its shape (`form`,
    /// `kinds`, as many values) was rendered before.
    fn finish<K>(self, form: Form, kinds: K, render: impl FnOnce() -> ClaimText) -> Claim
    where
        K: Iterator<Item = TokenKind> + Clone,
    {
        let text = rendered(form, kinds, self.values.len(), render);
        Claim {
            what: self.what,
            text,
            values: self.values,
            keys: self.keys,
        }
    }

    /// The claim with a text of its own, rendered now and kept by no other.
    #[cfg(test)]
    pub(crate) fn with_text(self, claim: String, then: Vec<Then>) -> Claim {
        Claim {
            what: self.what,
            text: Arc::new(ClaimText::new(claim, then)),
            values: self.values,
            keys: self.keys,
        }
    }

    /// The claim `claim` renders (a statement of `form`) and, if it wins,
    /// stores `tokens` and records their grant.
    pub(crate) fn issuing(
        mut self,
        form: Form,
        claim: impl FnOnce() -> String,
        tokens: &[OAuthToken],
    ) -> Claim {
        if let Some(token) = tokens.first() {
            self.keys
                .push(Key::Grant(token.family_id.as_str().to_owned()));
        }
        let rows: Vec<[Placeholder; 12]> = tokens.iter().map(|t| self.token(t)).collect();
        let grant = tokens
            .iter()
            .find(|t| t.kind == TokenKind::Refresh)
            .map(|refresh| self.grant(refresh));
        self.finish(form, tokens.iter().map(|t| t.kind), || {
            let mut then = Vec::new();
            if !rows.is_empty() {
                then.push(Then {
                    into: "INSERT INTO oauth_tokens (id, token_hash, kind, family_id, \
                           client_id, user_id, workspace_id, scopes, created_at, expires_at, \
                           revoked_at, rotated_at)"
                        .to_owned(),
                    rows: Rows::Values(rows.iter().map(|row| format!("({})", list(row))).collect()),
                    tail: String::new(),
                });
            }
            if let Some(grant) = grant {
                then.push(Then::grant(Rows::Values(vec![format!(
                    "({})",
                    list(&grant)
                )])));
            }
            ClaimText::new(claim(), then)
        })
    }

    /// A token's values, as its row takes them.
    fn token(&mut self, token: &OAuthToken) -> [Placeholder; 12] {
        [
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
        ]
    }

    /// The values of the grant the tokens belong to, from their refresh
    /// token: made by the code's redemption, and each refresh records a use
    /// (its scopes, which a refresh may narrow, and its new expiry). Its
    /// creation time stays.
    fn grant(&mut self, refresh: &OAuthToken) -> [Placeholder; 8] {
        [
            self.bind(refresh.family_id.as_str()),
            self.bind(refresh.client_id.as_str()),
            self.bind(refresh.user_id.as_str()),
            self.bind(refresh.workspace_id.as_str()),
            self.bind(i64::from(refresh.scopes.bits())),
            self.bind(refresh.created_at.0),
            self.bind(refresh.created_at.0),
            self.bind(refresh.expires_at.0),
        ]
    }

    /// The claim `claim` renders (a statement of `form`) on the code whose
    /// hash is `hash` and, if it wins, stores a token for each of `seeds`,
    /// created `at`, with the code's family, owner and scopes, and makes
    /// their grant: all read from the code's row, which the caller has not
    /// seen.
    pub(crate) fn issuing_from_code(
        mut self,
        form: Form,
        claim: impl FnOnce() -> String,
        hash: Placeholder,
        at: Placeholder,
        seeds: &[TokenSeed],
    ) -> Claim {
        let rows: Vec<[Placeholder; 4]> = seeds
            .iter()
            .map(|seed| {
                [
                    self.bind(seed.id.as_str()),
                    self.bind(seed.hash.as_bytes().as_slice()),
                    self.bind(seed.kind.as_str()),
                    self.bind(seed.expires_at.0),
                ]
            })
            .collect();
        let grant_expires_at = seeds
            .iter()
            .find(|s| s.kind == TokenKind::Refresh)
            .map(|refresh| self.bind(refresh.expires_at.0));
        self.finish(form, seeds.iter().map(|s| s.kind), || {
            let code = format!(
                "(SELECT family_id, client_id, user_id, workspace_id, scopes \
                 FROM oauth_codes WHERE code_hash = {hash}) AS code"
            );
            let values: Vec<String> = rows.iter().map(|row| format!("({})", list(row))).collect();
            // Both backends name a VALUES list's columns column1, column2, …
            let mut then = vec![Then {
                into: "INSERT INTO oauth_tokens (id, token_hash, kind, family_id, client_id, \
                       user_id, workspace_id, scopes, created_at, expires_at)"
                    .to_owned(),
                rows: Rows::Select(format!(
                    "SELECT issued.column1, issued.column2, issued.column3, code.family_id, \
                     code.client_id, code.user_id, code.workspace_id, code.scopes, {at}, \
                     issued.column4 FROM (VALUES {}) AS issued CROSS JOIN {code}",
                    values.join(", ")
                )),
                tail: String::new(),
            }];
            if let Some(expires_at) = grant_expires_at {
                then.push(Then::grant(Rows::Select(format!(
                    "SELECT code.family_id, code.client_id, code.user_id, \
                     code.workspace_id, code.scopes, {at}, {at}, {expires_at} FROM {code}"
                ))));
            }
            ClaimText::new(claim(), then)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use velocity_domain::oauth::{ClientId, FamilyId, TokenId};
    use velocity_domain::{ScopeSet, SecretHash, Timestamp, UserId, WorkspaceId};

    use super::*;

    fn code(secret: &str) -> AuthorizationCode {
        AuthorizationCode {
            hash: SecretHash::of(secret),
            client_id: ClientId(format!("client-{secret}")),
            redirect_uri: "https://app.example/cb".to_owned(),
            user_id: UserId::generate(),
            workspace_id: WorkspaceId::generate(),
            scopes: ScopeSet::workspace(),
            code_challenge: "challenge".to_owned(),
            family_id: FamilyId::generate(),
            created_at: Timestamp(1),
            expires_at: Timestamp(2),
            used_at: None,
        }
    }

    fn token(kind: TokenKind) -> OAuthToken {
        OAuthToken {
            id: TokenId::generate(),
            hash: SecretHash::of(&TokenId::generate().0),
            kind,
            family_id: FamilyId::generate(),
            client_id: ClientId("client".to_owned()),
            user_id: UserId::generate(),
            workspace_id: WorkspaceId::generate(),
            scopes: ScopeSet::workspace(),
            created_at: Timestamp(1),
            expires_at: Timestamp(2),
            revoked_at: None,
            rotated_at: None,
        }
    }

    /// A claim spending row `id`, issuing `tokens`.
    fn spending(id: i64, tokens: &[OAuthToken]) -> Claim {
        let mut draft = Claim::draft("thing");
        let id = draft.bind(id);
        draft.issuing(
            Form::RotateRefreshToken,
            move || format!("UPDATE thing SET spent = 1 WHERE id = {id}"),
            tokens,
        )
    }

    /// Every `$n` in the claim's text, in order.
    fn placeholders(claim: &Claim) -> Vec<usize> {
        let mut text = claim.text.claim.clone();
        for then in &claim.text.then {
            text.push_str(&then.select_where(""));
        }
        text.split('$')
            .skip(1)
            .map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
            .collect()
    }

    #[test]
    fn placeholders_count_in_binding_order() {
        let mut draft = Claim::draft("code");
        let first = draft.bind(7_i64);
        let second = draft.bind("x");
        let third = draft.bind(None::<i64>);
        assert_eq!(
            [first, second, third].map(|p| p.to_string()),
            ["$1", "$2", "$3"]
        );
        assert_eq!(
            draft.values,
            vec![
                Value::Integer(Some(7)),
                Value::Text("x".into()),
                Value::Integer(None)
            ]
        );
    }

    #[test]
    fn claims_of_one_shape_share_their_text_not_their_values() {
        let (a, b) = (Claim::new_code(&code("a")), Claim::new_code(&code("b")));
        assert!(Arc::ptr_eq(&a.text, &b.text));
        assert_ne!(a.values, b.values);

        let pair = [token(TokenKind::Access), token(TokenKind::Refresh)];
        let other_pair = [token(TokenKind::Access), token(TokenKind::Refresh)];
        let (a, b) = (spending(1, &pair), spending(2, &other_pair));
        assert!(Arc::ptr_eq(&a.text, &b.text));
        assert_eq!(a.values[0], Value::Integer(Some(1)));
        assert_eq!(b.values[0], Value::Integer(Some(2)));
    }

    #[test]
    fn claims_issuing_other_tokens_have_other_texts() {
        let pair = spending(1, &[token(TokenKind::Access), token(TokenKind::Refresh)]);
        let access = spending(1, &[token(TokenKind::Access)]);
        let reversed = spending(1, &[token(TokenKind::Refresh), token(TokenKind::Access)]);
        assert!(!Arc::ptr_eq(&pair.text, &access.text));
        assert!(!Arc::ptr_eq(&pair.text, &reversed.text));
        // An access token alone has no grant to record.
        assert_eq!(access.text.then.len(), 1);
        assert_eq!(pair.text.then.len(), 2);
        assert!(!ClaimText::same(&pair.text, &access.text));
    }

    /// The shared text names each of the claim's values, and no other.
    #[test]
    fn every_value_is_named_and_every_name_has_a_value() {
        let pair = [token(TokenKind::Access), token(TokenKind::Refresh)];
        for claim in [
            Claim::new_code(&code("a")),
            spending(1, &pair),
            spending(1, &pair[..1]),
        ] {
            let mut named = placeholders(&claim);
            named.sort_unstable();
            named.dedup();
            assert_eq!(named, (1..=claim.values.len()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn statements_apart_number_their_own_placeholders() {
        let statement = Statement::of("UPDATE t SET a = $3 WHERE id = $1 AND b = $3 AND c = $12");
        assert_eq!(
            statement,
            Statement {
                sql: "UPDATE t SET a = ?1 WHERE id = ?2 AND b = ?1 AND c = ?3".to_owned(),
                values: vec![2, 0, 11],
            }
        );
        assert_eq!(Statement::of("a lone $ stays").sql, "a lone $ stays");
        assert_eq!(Statement::of("SELECT $0").values, vec![usize::MAX]);
    }

    #[test]
    fn a_joined_statement_is_made_once_for_its_key() {
        let text = ClaimText::new("SELECT $1".to_owned(), Vec::new());
        let two = text.joined(2, |text| format!("{0}; {0}", text.claim));
        let again = text.joined(2, |_| unreachable!("joined again"));
        assert!(Arc::ptr_eq(&two, &again));
        assert_eq!(&*two, "SELECT $1; SELECT $1");
        assert_eq!(&*text.joined(1, |text| text.claim.clone()), "SELECT $1");
    }

    #[test]
    fn a_text_is_split_once() {
        let text = ClaimText::new("SELECT $2, $1".to_owned(), Vec::new());
        let first = text.apart(|text| vec![text.claim.clone()]).as_ptr();
        let again = text.apart(|_| unreachable!("split again")).as_ptr();
        assert_eq!(first, again);
        assert_eq!(text.apart(|_| Vec::new())[0].values, vec![1, 0]);
    }
}
