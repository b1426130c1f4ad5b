//! Copies the WAL back into the database file on a connection of its own,
//! so the writer never does it inside a commit.
//!
//! SQLite checkpoints from the committing connection by default, once the
//! WAL passes 1,000 pages: that commit then also writes those pages to the
//! database file and fsyncs it, and every caller of its batch waits. Here a
//! task checkpoints every `INTERVAL` instead, `PASSIVE`ly: it never waits
//! for the writer or readers (nor they for it), it copies what no reader
//! still needs and leaves the rest for next time.
//!
//! Copying is not enough: the WAL only starts again from its beginning
//! once a checkpoint has copied *every* frame, and under steady writes a
//! commit always lands while this one runs. The WAL then grew until the
//! writer's own automatic checkpoint (at `WAL_AUTOCHECKPOINT` frames)
//! caught up inside a commit, and that batch's callers waited 20–40 ms for
//! it: the tail of code exchanges. So once the WAL passes [`CATCH_UP`]
//! frames, and this task has just copied all it saw, the writer finishes
//! the job between two batches ([`BetweenBatches`]): it copies only what
//! committed meanwhile, a few milliseconds' worth, with no commit landing
//! during it, and its next transaction starts the WAL afresh.
//!
//! SQLite fsyncs the database file only at the end of a checkpoint that
//! copied every frame, so under load this task's checkpoints never do, and
//! the catch-up's fsync had to write back every page they copied: 20–30
//! ms, all of it holding commits back. This task therefore fsyncs the file
//! itself, off the writer's path, before it asks for the catch-up
//! ([`flush`]); the catch-up's fsync then writes back the few pages it
//! copied.

use std::path::PathBuf;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use velocity_domain::StoreError;
use velocity_domain::store::StoreResult;

use crate::sqlite::native::{self, GrantsConnection};
use crate::writer::BetweenBatches;

/// Often enough that the WAL stays a few megabytes at thousands of grants
/// a second; an idle checkpoint is one cheap statement.
const INTERVAL: Duration = Duration::from_millis(200);

/// WAL frames (pages) past which the writer catches up: about 16 MiB, a
/// quarter of a second of grants at full speed.
const CATCH_UP: i64 = 4096;

/// Most checkpoints in a row before the writer's catch-up.
const PASSES: usize = 4;

/// New frames few enough that the writer may copy them: a few
/// milliseconds' worth.
const FEW: i64 = 256;

pub(crate) struct Checkpointer {
    stop: std::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl Checkpointer {
    pub(super) fn spawn(options: SqliteConnectOptions, writer: BetweenBatches) -> Self {
        let (stop, stopped) = oneshot::channel();
        let handle = tokio::spawn(run(options, writer, stopped));
        Checkpointer {
            stop: std::sync::Mutex::new(Some((stop, handle))),
        }
    }

    pub(crate) async fn close(&self) {
        let stop = self.stop.lock().ok().and_then(|mut stop| stop.take());
        if let Some((stop, handle)) = stop {
            let _ = stop.send(());
            let _ = handle.await;
        }
    }
}

/// What `PRAGMA wal_checkpoint` answers: whether it was blocked, the
/// frames in the WAL, and how many of them are copied into the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Progress {
    pub(crate) busy: i64,
    pub(crate) frames: i64,
    pub(crate) copied: i64,
}

impl Progress {
    /// Whether the writer should finish what this checkpoint did: the WAL
    /// is long, and all of it that this checkpoint saw is copied, so what
    /// is left is only what committed while it ran.
    fn wants_catch_up(self) -> bool {
        self.busy == 0 && self.frames >= CATCH_UP && self.copied == self.frames
    }
}

/// A passive checkpoint on the writer's native connection, between batches.
pub(crate) fn catch_up(conn: &GrantsConnection) -> StoreResult<Progress> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
        Ok(Progress {
            busy: row.get(0)?,
            frames: row.get(1)?,
            copied: row.get(2)?,
        })
    })
    .map_err(|e| native::classify(e, "checkpoint"))
}

/// A passive checkpoint on the checkpointer's own connection.
async fn checkpoint(conn: &mut SqliteConnection) -> Result<Progress, sqlx::Error> {
    let (busy, frames, copied) =
        sqlx::query_as::<_, (i64, i64, i64)>("PRAGMA wal_checkpoint(PASSIVE)")
            .fetch_one(conn)
            .await?;
    Ok(Progress {
        busy,
        frames,
        copied,
    })
}

/// Writes back the database file's pages that checkpoints copied (an
/// fsync through a descriptor of its own: the pages are the file's, not
/// the descriptor's), on a blocking thread.
async fn flush(path: PathBuf) -> std::io::Result<()> {
    tokio::task::spawn_blocking(move || std::fs::File::open(path)?.sync_data())
        .await
        .map_err(std::io::Error::other)?
}

/// Checkpoints, and once the WAL is long enough to want the writer's
/// catch-up, again while each pass still finds many new frames (those that
/// committed during the pass before), up to [`PASSES`] in all: what is
/// left to the writer, which holds every commit back while it copies, is
/// then only what committed during the last, short pass.
async fn closing_in(conn: &mut SqliteConnection) -> Result<Progress, sqlx::Error> {
    let mut progress = checkpoint(conn).await?;
    for _ in 1..PASSES {
        if !progress.wants_catch_up() {
            break;
        }
        let next = checkpoint(conn).await?;
        let new = next.frames - progress.frames;
        progress = next;
        if new < FEW {
            break;
        }
    }
    Ok(progress)
}

async fn run(
    options: SqliteConnectOptions,
    writer: BetweenBatches,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conn: Option<SqliteConnection> = None;
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(INTERVAL) => {}
        }
        if conn.is_none() {
            conn = options.connect().await.ok();
        }
        let Some(c) = conn.as_mut() else { continue };
        let progress = match closing_in(c).await {
            Ok(progress) => progress,
            Err(err) => {
                // The writer's own (rare) checkpoints are the fallback meanwhile.
                tracing::warn!(error = %err, "WAL checkpoint failed; reconnecting");
                if let Some(c) = conn.take() {
                    let _ = c.close().await;
                }
                continue;
            }
        };
        if progress.wants_catch_up() {
            if let Err(err) = flush(options.get_filename().to_owned()).await {
                // The catch-up's own fsync writes them back instead.
                tracing::warn!(error = %err, "cannot fsync the database file");
            }
            match writer.run(catch_up).await {
                Ok(_) => {}
                // The writer has stopped: so will this task.
                Err(StoreError::Unavailable(_)) => {}
                Err(err) => tracing::warn!(error = %err, "the writer's WAL catch-up failed"),
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_catches_up_a_long_wal_only_behind_a_complete_checkpoint() {
        let progress = |busy, frames, copied| Progress {
            busy,
            frames,
            copied,
        };
        assert!(progress(0, CATCH_UP, CATCH_UP).wants_catch_up());
        assert!(
            !progress(0, CATCH_UP - 1, CATCH_UP - 1).wants_catch_up(),
            "short"
        );
        assert!(
            !progress(0, CATCH_UP, CATCH_UP - 1).wants_catch_up(),
            "a reader held frames back"
        );
        assert!(!progress(1, -1, -1).wants_catch_up(), "blocked");
    }
}
