//! A VFS over SQLite's default one that gathers the writes to a WAL into
//! a few large `pwrite`s per sync, for the grants' connection.
//!
//! SQLite writes each WAL frame as two `pwrite`s: its 24-byte header, then
//! the page, neither aligned to the kernel's page cache, so each frame
//! touches about three cached pages. A commit of about seven grants is
//! 37–67 frames, 75–130 system calls: 18 % of the server's CPU in the
//! code-exchange phase of the peer bench (docs/performance.md). Here the
//! frames wait in memory while they run on from one another, and go down
//! in writes of up to [`MAX_WRITE`] when SQLite asks for a sync, before
//! the sync.
//!
//! Why SQLite's guarantees hold:
//! - With `synchronous = FULL` (the grants' connection sets it, and this
//!   VFS is for no other), every commit syncs the WAL before it updates the
//!   WAL index that makes it visible, and answers only after: a write held
//!   here belongs to a transaction that has not committed. A crash loses
//!   such a transaction, as it may without this VFS.
//! - Anything that reads or measures the file (a read, its size, a
//!   truncation, a file control, closing it) first writes what is held,
//!   so the file never looks different to SQLite from what it wrote.
//! - A write that does not run on from what is held (SQLite rewriting a
//!   frame of the open transaction) first writes what is held, so writes
//!   reach the file in the order SQLite made them.
//! - Other connections open the WAL through the default VFS and read only
//!   frames of committed transactions: written and synced.
//!
//! Every other file (the database, its shared-memory index) is the default
//! VFS's own, untouched.
//!
//! This is the workspace's one module with `unsafe` code: SQLite's VFS
//! interface is C, and no maintained crate wraps a VFS around the default
//! one. Every function here is called by SQLite, on the one thread that
//! holds the connection, with the pointers SQLite's VFS contract gives.

use std::ffi::{CStr, c_char, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use rusqlite::ffi;

/// The name to open a connection with (`Connection::open_with_flags_and_vfs`).
pub(crate) const NAME: &CStr = c"velocity-gathered-wal";

/// Held bytes past this go down at once: a bound on memory for a very
/// large transaction, which then writes a few MiB a call.
const MAX_HELD: usize = 4 << 20;

/// The most one call to the default VFS writes. The Unix VFS takes less
/// than 128 KiB a write (`seekAndWriteFd` asserts it, then masks the
/// length with 0x1ffff: a longer write is cut, and one whose rest is a
/// multiple of 128 KiB ends as SQLITE_FULL). SQLite's own writes are a
/// page at most.
const MAX_WRITE: usize = 120 << 10;

/// The default VFS, which does the work.
static BASE: AtomicPtr<ffi::sqlite3_vfs> = AtomicPtr::new(ptr::null_mut());

/// Registers the VFS, once per process; its name, or SQLite's error code.
pub(crate) fn register() -> Result<&'static CStr, c_int> {
    static REGISTERED: OnceLock<Result<(), c_int>> = OnceLock::new();
    // SAFETY: `install` runs once (OnceLock), before any connection uses
    // the VFS.
    (*REGISTERED.get_or_init(|| unsafe { install() })).map(|()| NAME)
}

/// # Safety
/// Once per process.
unsafe fn install() -> Result<(), c_int> {
    // SAFETY: SQLite's documented entry points; `base` is checked non-null
    // and lives as long as the process (registered VFSs are never freed
    // by SQLite). Our copy is leaked for the same reason.
    unsafe {
        let rc = ffi::sqlite3_initialize();
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
        let base = ffi::sqlite3_vfs_find(ptr::null());
        if base.is_null() {
            return Err(ffi::SQLITE_ERROR);
        }
        BASE.store(base, Ordering::Release);
        // The default VFS's functions, but for opening: they take the VFS
        // as an argument, and the copy keeps the fields they may read
        // (`pAppData`, `mxPathname`).
        let mut vfs = *base;
        vfs.pNext = ptr::null_mut();
        vfs.zName = NAME.as_ptr();
        vfs.szOsFile = c_int::try_from(std::mem::size_of::<GatheredFile>())
            .ok()
            .and_then(|own| own.checked_add((*base).szOsFile))
            .ok_or(ffi::SQLITE_ERROR)?;
        vfs.xOpen = Some(open);
        let rc = ffi::sqlite3_vfs_register(Box::into_raw(Box::new(vfs)), 0);
        if rc != ffi::SQLITE_OK {
            return Err(rc);
        }
        Ok(())
    }
}

/// An open WAL: SQLite's file header, then ours; the default VFS's file
/// follows in the same allocation (`szOsFile` counts both).
#[repr(C)]
struct GatheredFile {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    held: *mut Held,
}

/// Bytes written and not yet passed on: a run from `start`.
struct Held {
    start: i64,
    bytes: Vec<u8>,
}

impl Held {
    fn end(&self) -> i64 {
        self.start
            .saturating_add(i64::try_from(self.bytes.len()).unwrap_or(i64::MAX))
    }
}

static METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
    xClose: Some(close),
    xRead: Some(read),
    xWrite: Some(write),
    xTruncate: Some(truncate),
    xSync: Some(sync),
    xFileSize: Some(file_size),
    xLock: Some(lock),
    xUnlock: Some(unlock),
    xCheckReservedLock: Some(check_reserved_lock),
    xFileControl: Some(file_control),
    xSectorSize: Some(sector_size),
    xDeviceCharacteristics: Some(device_characteristics),
    xShmMap: Some(shm_map),
    xShmLock: Some(shm_lock),
    xShmBarrier: Some(shm_barrier),
    xShmUnmap: Some(shm_unmap),
    xFetch: Some(fetch),
    xUnfetch: Some(unfetch),
};

unsafe extern "C" fn open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: SQLite gives `file` with `szOsFile` bytes, 8-aligned; the
    // default VFS's file fits after ours, which is a multiple of 8 bytes.
    unsafe {
        let base = BASE.load(Ordering::Acquire);
        let Some(base_open) = base.as_ref().and_then(|base| base.xOpen) else {
            return ffi::SQLITE_ERROR;
        };
        if flags & ffi::SQLITE_OPEN_WAL == 0 {
            // Not a WAL: the default VFS's file as it is, in our bytes.
            return base_open(base, name, file, flags, out_flags);
        }
        let inner = file
            .cast::<u8>()
            .add(std::mem::size_of::<GatheredFile>())
            .cast::<ffi::sqlite3_file>();
        (*file).pMethods = ptr::null();
        let rc = base_open(base, name, inner, flags, out_flags);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let held = Box::into_raw(Box::new(Held {
            start: 0,
            bytes: Vec::new(),
        }));
        file.cast::<GatheredFile>().write(GatheredFile {
            base: ffi::sqlite3_file { pMethods: &METHODS },
            inner,
            held,
        });
        ffi::SQLITE_OK
    }
}

/// The default VFS's file and its methods, and what is held.
///
/// # Safety
/// `file` is a WAL this VFS opened and has not closed.
unsafe fn parts<'a>(
    file: *mut ffi::sqlite3_file,
) -> (
    *mut ffi::sqlite3_file,
    &'a ffi::sqlite3_io_methods,
    &'a mut Held,
) {
    // SAFETY: `open` wrote a GatheredFile whose `inner` is open (so its
    // methods are set) and whose `held` is a live Box.
    unsafe {
        let gathered = &*file.cast::<GatheredFile>();
        let inner = gathered.inner;
        (inner, &*(*inner).pMethods, &mut *gathered.held)
    }
}

/// Passes on what is held, in as few writes as the default VFS takes;
/// what is held is gone either way (after a failure SQLite abandons the
/// transaction it belonged to).
///
/// # Safety
/// As [`parts`].
unsafe fn flush(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: as `parts`; the buffer outlives the calls.
    unsafe {
        let (inner, methods, held) = parts(file);
        let Some(write) = methods.xWrite else {
            held.bytes.clear();
            return ffi::SQLITE_IOERR_WRITE;
        };
        let mut rc = ffi::SQLITE_OK;
        let mut offset = held.start;
        for chunk in held.bytes.chunks(MAX_WRITE) {
            // MAX_WRITE fits a c_int.
            let len = c_int::try_from(chunk.len()).unwrap_or(c_int::MAX);
            rc = write(inner, chunk.as_ptr().cast(), len, offset);
            if rc != ffi::SQLITE_OK {
                break;
            }
            offset = offset.saturating_add(i64::from(len));
        }
        held.bytes.clear();
        rc
    }
}

/// Flushes, then runs `then` on the default VFS's file.
///
/// # Safety
/// As [`parts`].
unsafe fn flushed(
    file: *mut ffi::sqlite3_file,
    then: impl FnOnce(*mut ffi::sqlite3_file, &ffi::sqlite3_io_methods) -> c_int,
) -> c_int {
    // SAFETY: as `parts`.
    unsafe {
        let rc = flush(file);
        if rc != ffi::SQLITE_OK {
            return rc;
        }
        let (inner, methods, _) = parts(file);
        then(inner, methods)
    }
}

unsafe extern "C" fn write(
    file: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amount: c_int,
    offset: i64,
) -> c_int {
    // SAFETY: SQLite gives `amount` readable bytes at `buf`.
    unsafe {
        let Ok(len) = usize::try_from(amount) else {
            return ffi::SQLITE_IOERR_WRITE;
        };
        let runs_on = {
            let (_, _, held) = parts(file);
            held.bytes.is_empty() || held.end() == offset
        };
        if !runs_on {
            let rc = flush(file);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
        }
        let (_, _, held) = parts(file);
        if held.bytes.is_empty() {
            held.start = offset;
        }
        held.bytes
            .extend_from_slice(std::slice::from_raw_parts(buf.cast::<u8>(), len));
        if held.bytes.len() >= MAX_HELD {
            return flush(file);
        }
        ffi::SQLITE_OK
    }
}

unsafe extern "C" fn close(file: *mut ffi::sqlite3_file) -> c_int {
    // SAFETY: SQLite closes a file once; `held` was made by Box in `open`
    // and is freed here, after its last use.
    unsafe {
        let flushed = flush(file);
        let (inner, methods, _) = parts(file);
        let closed = methods.xClose.map_or(ffi::SQLITE_OK, |f| f(inner));
        let gathered = &mut *file.cast::<GatheredFile>();
        drop(Box::from_raw(gathered.held));
        gathered.held = ptr::null_mut();
        gathered.base.pMethods = ptr::null();
        if flushed != ffi::SQLITE_OK {
            flushed
        } else {
            closed
        }
    }
}

/// Forwards a method to the default VFS's file: after writing what is
/// held (`flush first`) for those that read, size or change the file, or
/// as it is for those that neither read nor write its contents.
macro_rules! forward {
    (flush first $name:ident, $method:ident, $missing:expr, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: forwarded as given.
            unsafe {
                flushed(file, |inner, methods| match methods.$method {
                    Some(f) => f(inner $(, $arg)*),
                    None => $missing,
                })
            }
        }
    };
    ($name:ident, $method:ident, $missing:expr, ($($arg:ident: $ty:ty),*)) => {
        unsafe extern "C" fn $name(file: *mut ffi::sqlite3_file $(, $arg: $ty)*) -> c_int {
            // SAFETY: forwarded as given.
            unsafe {
                let (inner, methods, _) = parts(file);
                match methods.$method {
                    Some(f) => f(inner $(, $arg)*),
                    None => $missing,
                }
            }
        }
    };
}

forward!(flush first read, xRead, ffi::SQLITE_IOERR_READ, (buf: *mut c_void, amount: c_int, offset: i64));
forward!(flush first sync, xSync, ffi::SQLITE_IOERR_FSYNC, (flags: c_int));
forward!(flush first truncate, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, (size: i64));
forward!(flush first file_size, xFileSize, ffi::SQLITE_IOERR_FSTAT, (size: *mut i64));
forward!(flush first file_control, xFileControl, ffi::SQLITE_NOTFOUND, (op: c_int, arg: *mut c_void));
forward!(lock, xLock, ffi::SQLITE_IOERR_LOCK, (level: c_int));
forward!(unlock, xUnlock, ffi::SQLITE_IOERR_UNLOCK, (level: c_int));
forward!(check_reserved_lock, xCheckReservedLock, ffi::SQLITE_IOERR_CHECKRESERVEDLOCK, (out: *mut c_int));
forward!(sector_size, xSectorSize, 4096, ());
forward!(device_characteristics, xDeviceCharacteristics, 0, ());
forward!(shm_map, xShmMap, ffi::SQLITE_IOERR_SHMMAP, (page: c_int, size: c_int, extend: c_int, out: *mut *mut c_void));
forward!(shm_lock, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, (offset: c_int, n: c_int, flags: c_int));
forward!(shm_unmap, xShmUnmap, ffi::SQLITE_OK, (delete: c_int));
forward!(unfetch, xUnfetch, ffi::SQLITE_OK, (offset: i64, page: *mut c_void));

unsafe extern "C" fn shm_barrier(file: *mut ffi::sqlite3_file) {
    // SAFETY: forwarded as given.
    unsafe {
        let (inner, methods, _) = parts(file);
        if let Some(f) = methods.xShmBarrier {
            f(inner);
        }
    }
}

unsafe extern "C" fn fetch(
    file: *mut ffi::sqlite3_file,
    offset: i64,
    amount: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: forwarded as given; a mapping must see what was written.
    unsafe {
        flushed(file, |inner, m| match m.xFetch {
            Some(f) => f(inner, offset, amount, out),
            None => {
                *out = ptr::null_mut();
                ffi::SQLITE_OK
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::{Connection, OpenFlags};

    fn open(path: &std::path::Path) -> Connection {
        let conn = Connection::open_with_flags_and_vfs(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE,
            register().unwrap(),
        )
        .unwrap();
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; \
             PRAGMA wal_autocheckpoint = 0;",
        )
        .unwrap();
        conn
    }

    /// Committed rows are in the WAL as soon as the commit returns: another
    /// connection, through the default VFS, reads them; and a transaction
    /// larger than the held bound, rolled back, leaves nothing.
    #[test]
    fn commits_reach_the_file_and_other_connections() {
        let path =
            std::env::temp_dir().join(format!("velocity-gathered-{}.db", std::process::id()));
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        let writer = open(&path);
        writer
            .execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB NOT NULL)")
            .unwrap();
        let reader = Connection::open(&path).unwrap();
        let count = |conn: &Connection| -> i64 {
            conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .unwrap()
        };
        for batch in 0..20 {
            writer.execute_batch("BEGIN IMMEDIATE").unwrap();
            for i in 0..50 {
                writer
                    .execute(
                        "INSERT INTO t (id, body) VALUES (?1, randomblob(300))",
                        [batch * 50 + i],
                    )
                    .unwrap();
            }
            writer.execute_batch("COMMIT").unwrap();
            assert_eq!(count(&reader), (batch + 1) * 50);
        }
        // Over MAX_HELD in one transaction: written as it goes, then undone.
        writer.execute_batch("BEGIN IMMEDIATE").unwrap();
        writer
            .execute(
                "WITH RECURSIVE n(v) AS (SELECT 1 UNION ALL SELECT v + 1 FROM n WHERE v < 2000) \
                 INSERT INTO t (id, body) SELECT 100000 + v, randomblob(4000) FROM n",
                [],
            )
            .unwrap();
        assert_eq!(
            count(&writer),
            1000 + 2000,
            "the writer reads its own spill"
        );
        writer.execute_batch("ROLLBACK").unwrap();
        assert_eq!(count(&reader), 1000);
        assert_eq!(count(&writer), 1000);
        // A checkpoint reads the WAL back through this VFS.
        let (busy, _, _): (i64, i64, i64) = writer
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(busy, 0);
        drop(writer);
        drop(reader);
        let reopened = Connection::open(&path).unwrap();
        assert_eq!(count(&reopened), 1000);
        let ok: String = reopened
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(ok, "ok");
        drop(reopened);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}
