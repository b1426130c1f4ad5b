//! `velocity-grant-floor`: the most a core can do of a grant's durable
//! storage work on SQLite, with nothing else in the way.
//!
//! It writes what the server's grants connection writes for a code
//! exchange (the code spent, two tokens, the grant) or a refresh grant (the
//! refresh token rotated, two tokens, the grant's use recorded), into the
//! server's own schema (`migrations/sqlite`), through a connection opened
//! as the server's grants connection is (its VFS and settings: WAL,
//! `synchronous = FULL`, foreign keys), a batch of grants a transaction,
//! one commit and fsync a batch. It leaves out everything else a grant
//! costs: HTTP, client authentication, hashing, the random tokens, JSON,
//! the hand-off to the writer's thread. Its statements are plainer than the
//! server's (the code's owner is known here, not read from its row), its
//! family ids arrive in time order, and its batches are as full as it is
//! told. So a server on the same core with the same durability answers
//! fewer grants a second than this, whatever else it does well; the
//! ratio of this figure to another server's is a ceiling on ours.
//!
//! usage: velocity-grant-floor [exchange|refresh] [--seconds S] [--batch B]
//!        [--codes N] [--dir DIR]
//! Prints one line: grants a second, and CPU (user, system) a grant.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rusqlite::{Connection, params};

const MIGRATIONS: [&str; 4] = [
    include_str!("../../../../migrations/sqlite/0001_directory_and_keys.sql"),
    include_str!("../../../../migrations/sqlite/0002_oauth.sql"),
    include_str!("../../../../migrations/sqlite/0003_invalidations.sql"),
    include_str!("../../../../migrations/sqlite/0004_workspace_apps_and_grants.sql"),
];

const CLIENT: &str = "floor-client";
const USER: &str = "0190c3a0-0000-7000-8000-000000000001";
const WORKSPACE: &str = "0190c3a0-0000-7000-8000-000000000002";
/// issues:read, issues:write, user:read: any value will do.
const SCOPES: i64 = 7;
const HOUR_MS: i64 = 3_600_000;
const DAYS_30_MS: i64 = 30 * 24 * HOUR_MS;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Grant {
    Exchange,
    Refresh,
}

struct Args {
    grant: Grant,
    seconds: u64,
    batch: usize,
    codes: usize,
    dir: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut args = Args {
        grant: Grant::Exchange,
        seconds: 10,
        batch: 16,
        codes: 200_000,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "exchange" => args.grant = Grant::Exchange,
            "refresh" => args.grant = Grant::Refresh,
            "--seconds" => args.seconds = value("--seconds")?.parse()?,
            "--batch" => args.batch = value("--batch")?.parse()?,
            "--codes" => args.codes = value("--codes")?.parse()?,
            "--dir" => args.dir = Some(PathBuf::from(value("--dir")?)),
            other => bail!("unknown argument {other:?} (see the file's header for usage)"),
        }
    }
    if args.batch == 0 || args.seconds == 0 {
        bail!("--batch and --seconds must be positive");
    }
    Ok(args)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let dir = match &args.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("velocity-grant-floor-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("floor.db");
    let result = run(&args, &path);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    if args.dir.is_none() {
        let _ = std::fs::remove_dir(&dir);
    }
    let line = result?;
    println!("{line}");
    Ok(())
}

fn run(args: &Args, path: &std::path::Path) -> anyhow::Result<String> {
    {
        let schema = Connection::open(path)?;
        schema.execute_batch("PRAGMA journal_mode = WAL;")?;
        for migration in MIGRATIONS {
            schema.execute_batch(migration)?;
        }
    }
    let mut conn = velocity_storage::SqliteStore::grants_connection(path)?;
    let now = now_ms();
    seed(&mut conn, args, now)?;
    // The seeding's pages are in the WAL: start the timed run from a
    // checkpointed database, as a server that has been up a while would.
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;

    let mut chains: Vec<Chain> = (0..args.batch).map(Chain::seeded).collect();
    let started = Instant::now();
    let cpu_before = cpu_ticks()?;
    let deadline = started + Duration::from_secs(args.seconds);
    let mut done = 0usize;
    let mut next_code = 0usize;
    while Instant::now() < deadline {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for slot in 0..args.batch {
            let at = now_ms();
            match args.grant {
                Grant::Exchange => {
                    if next_code == args.codes {
                        bail!("ran out of codes after {done} exchanges: raise --codes");
                    }
                    exchange(&tx, next_code, at)?;
                    next_code += 1;
                }
                Grant::Refresh => chains[slot].refresh(&tx, at)?,
            }
        }
        tx.commit()?;
        done += args.batch;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_ticks()?.since(cpu_before);
    let per_grant = |ticks: u64| ticks as f64 * 1e6 / ticks_per_second() / done as f64;
    Ok(format!(
        "grant={} batch={} grants={done} grants_per_s={:.0} cpu_user_us={:.1} cpu_sys_us={:.1} cpu_busy={:.2}",
        match args.grant {
            Grant::Exchange => "exchange",
            Grant::Refresh => "refresh",
        },
        args.batch,
        done as f64 / elapsed,
        per_grant(cpu.user),
        per_grant(cpu.system),
        (cpu.user + cpu.system) as f64 / ticks_per_second() / elapsed,
    ))
}

/// The directory rows the grants refer to, and the codes to exchange:
/// minted in time order, as consent mints them.
fn seed(conn: &mut Connection, args: &Args, now: i64) -> anyhow::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO users (id, email, name, created_at) VALUES (?1, 'floor@example.com', 'Floor', ?2)",
        params![USER, now],
    )?;
    tx.execute(
        "INSERT INTO workspaces (id, slug, name, created_at) VALUES (?1, 'floor', 'Floor', ?2)",
        params![WORKSPACE, now],
    )?;
    tx.execute(
        "INSERT INTO oauth_apps (client_id, name, client_type, secret_hash, redirect_uris, \
         allowed_scopes, created_at) VALUES (?1, 'Floor', 'confidential', ?2, \
         '[\"http://127.0.0.1:9/cb\"]', ?3, ?4)",
        params![CLIENT, [0u8; 32].as_slice(), SCOPES, now],
    )?;
    if args.grant == Grant::Exchange {
        let mut insert = tx.prepare(
            "INSERT INTO oauth_codes (code_hash, client_id, redirect_uri, user_id, workspace_id, \
             scopes, code_challenge, family_id, created_at, expires_at) \
             VALUES (?1, ?2, 'http://127.0.0.1:9/cb', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )?;
        for n in 0..args.codes {
            insert.execute(params![
                code_hash(n).as_slice(),
                CLIENT,
                USER,
                WORKSPACE,
                SCOPES,
                "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
                family_of(n),
                now,
                now + 600_000,
            ])?;
        }
    } else {
        for slot in 0..args.batch {
            Chain::seeded(slot).seed(&tx, now)?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Spends code `n` and issues its tokens and grant.
fn exchange(tx: &rusqlite::Transaction<'_>, n: usize, at: i64) -> anyhow::Result<()> {
    let spent = tx
        .prepare_cached(
            "UPDATE oauth_codes SET used_at = ?1 WHERE code_hash = ?2 AND used_at IS NULL \
             AND expires_at > ?1",
        )?
        .execute(params![at, code_hash(n).as_slice()])?;
    if spent != 1 {
        bail!("code {n} was not spent");
    }
    let family = family_of(n);
    insert_tokens(tx, &family, at)?;
    insert_grant(tx, &family, at)
}

/// The grant `family` made at `at`.
fn insert_grant(tx: &rusqlite::Transaction<'_>, family: &str, at: i64) -> anyhow::Result<()> {
    tx.prepare_cached(
        "INSERT INTO oauth_grants (id, client_id, user_id, workspace_id, scopes, created_at, \
         last_used_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
    )?
    .execute(params![
        family,
        CLIENT,
        USER,
        WORKSPACE,
        SCOPES,
        at,
        at + DAYS_30_MS
    ])?;
    Ok(())
}

/// An access and a refresh token of `family`, the refresh token's id
/// returned.
fn insert_tokens(tx: &rusqlite::Transaction<'_>, family: &str, at: i64) -> anyhow::Result<String> {
    let access = uuid::Uuid::now_v7().to_string();
    let refresh = uuid::Uuid::now_v7().to_string();
    tx.prepare_cached(
        "INSERT INTO oauth_tokens (id, token_hash, kind, family_id, client_id, user_id, \
         workspace_id, scopes, created_at, expires_at) VALUES \
         (?1, ?2, 'access', ?3, ?4, ?5, ?6, ?7, ?8, ?9), \
         (?10, ?11, 'refresh', ?3, ?4, ?5, ?6, ?7, ?8, ?12)",
    )?
    .execute(params![
        access,
        random_hash().as_slice(),
        family,
        CLIENT,
        USER,
        WORKSPACE,
        SCOPES,
        at,
        at + HOUR_MS,
        refresh,
        random_hash().as_slice(),
        at + DAYS_30_MS,
    ])?;
    Ok(refresh)
}

/// One rotating refresh-token chain, as one wrk connection of the peer
/// bench drives it.
struct Chain {
    family: String,
    refresh: String,
}

impl Chain {
    fn seeded(slot: usize) -> Chain {
        Chain {
            family: format!("0190c3a0-0000-7000-9000-{slot:012}"),
            refresh: format!("0190c3a0-0000-7000-a000-{slot:012}"),
        }
    }

    fn seed(&self, tx: &rusqlite::Transaction<'_>, now: i64) -> anyhow::Result<()> {
        tx.execute(
            "INSERT INTO oauth_tokens (id, token_hash, kind, family_id, client_id, user_id, \
             workspace_id, scopes, created_at, expires_at) \
             VALUES (?1, ?2, 'refresh', ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                self.refresh,
                random_hash().as_slice(),
                self.family,
                CLIENT,
                USER,
                WORKSPACE,
                SCOPES,
                now,
                now + DAYS_30_MS
            ],
        )?;
        insert_grant(tx, &self.family, now)
    }

    /// Rotates the chain's refresh token: spent once, replaced by a new pair.
    fn refresh(&mut self, tx: &rusqlite::Transaction<'_>, at: i64) -> anyhow::Result<()> {
        let rotated = tx
            .prepare_cached(
                "UPDATE oauth_tokens SET rotated_at = ?1 WHERE id = ?2 AND kind = 'refresh' \
                 AND revoked_at IS NULL AND rotated_at IS NULL",
            )?
            .execute(params![at, self.refresh])?;
        if rotated != 1 {
            bail!("refresh token of chain {} was not rotated", self.family);
        }
        self.refresh = insert_tokens(tx, &self.family, at)?;
        tx.prepare_cached(
            "UPDATE oauth_grants SET last_used_at = ?1, expires_at = ?2 WHERE id = ?3",
        )?
        .execute(params![at, at + DAYS_30_MS, self.family])?;
        Ok(())
    }
}

/// Code `n`'s hash: distinct, and as random in the index as a SHA-256.
fn code_hash(n: usize) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest((n as u64).to_le_bytes()).into()
}

/// Code `n`'s family: ids in the order codes are minted, as UUIDv7 are.
fn family_of(n: usize) -> String {
    format!("0190c3a1-0000-7000-8000-{n:012}")
}

fn random_hash() -> [u8; 32] {
    rand::random()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The process's CPU time so far, in clock ticks (`/proc/self/stat`).
#[derive(Clone, Copy)]
struct CpuTicks {
    user: u64,
    system: u64,
}

impl CpuTicks {
    fn since(self, before: CpuTicks) -> CpuTicks {
        CpuTicks {
            user: self.user - before.user,
            system: self.system - before.system,
        }
    }
}

fn cpu_ticks() -> anyhow::Result<CpuTicks> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // Fields after the command's closing parenthesis; utime and stime are
    // the 14th and 15th of the whole line.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unreadable /proc/self/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc/self/stat")?.parse()?)
    };
    Ok(CpuTicks {
        user: field(11)?,
        system: field(12)?,
    })
}

/// USER_HZ: 100 on every Linux this runs on.
fn ticks_per_second() -> f64 {
    100.0
}
