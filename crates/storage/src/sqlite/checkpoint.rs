//! Copies the WAL back into the database file on a connection of its own,
//! so the writer never does it inside a commit.
//!
//! SQLite checkpoints from the committing connection by default, once the
//! WAL passes 1,000 pages: that commit then also writes those pages to the
//! database file and fsyncs it, and every caller of its batch waits. Here a
//! task checkpoints every `INTERVAL` instead, `PASSIVE`ly: it never waits
//! for the writer or readers (nor they for it), it copies what no reader
//! still needs and leaves the rest for next time.

use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection};
use sqlx::{ConnectOptions, Connection};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Often enough that the WAL stays a few megabytes at thousands of grants
/// a second; an idle checkpoint is one cheap statement.
const INTERVAL: Duration = Duration::from_millis(200);

pub(crate) struct Checkpointer {
    stop: std::sync::Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl Checkpointer {
    pub(super) fn spawn(options: SqliteConnectOptions) -> Self {
        let (stop, stopped) = oneshot::channel();
        let handle = tokio::spawn(run(options, stopped));
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

async fn run(options: SqliteConnectOptions, mut stop: oneshot::Receiver<()>) {
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
        if let Err(err) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut *c)
            .await
        {
            // The writer's own (rare) checkpoints are the fallback meanwhile.
            tracing::warn!(error = %err, "WAL checkpoint failed; reconnecting");
            if let Some(c) = conn.take() {
                let _ = c.close().await;
            }
        }
    }
    if let Some(c) = conn {
        let _ = c.close().await;
    }
}
