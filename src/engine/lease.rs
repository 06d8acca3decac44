//! One writer per shard of an output directory. `jerex run` holds a lease for its shard,
//! `OUT/_leases/<i>-of-<n>.json`, from before it touches the output until it ends:
//!
//! - The lease file is created only if absent (`O_EXCL`, atomic on local and NFS file systems; an
//!   object store's conditional put does the same), so of two processes of one shard only one
//!   gets it; the other exits as retryable.
//! - Shards of one job (same count, other index) run side by side. A lease of another shard
//!   count (whose units overlap this one's), or of a run that clears the whole directory
//!   (`--overwrite`), excludes every other: after creating its own file each process looks for
//!   such leases and withdraws when it sees one, so of two that race at most one goes on.
//! - The holder renews its lease (the file's modification time) every [`RENEW`]. A lease is stale
//!   when its process is gone (same host) or it was not renewed for [`EXPIRY`] (a crashed holder
//!   on another machine; this assumes clocks agree within a fraction of that). A stale lease is
//!   taken over; the holder of a lease taken over finds out at its next unit commit, which fails,
//!   so no unit is committed by two writers.
//! - The lease is removed when the run ends, also on SIGTERM or Ctrl-C ([`release_all`]).
//!
//! On an object store the same protocol runs on conditional writes: the lease object is created
//! with `PutMode::Create` (if-none-match), renewed and taken over with `PutMode::Update` against
//! the version (etag) last read, so of two takers of a stale lease only one succeeds; its age is
//! the store's last-modified time.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::plan::Shard;
use crate::error::{Error, Result};
use crate::pipeline::now;
use crate::store::{self, Location};

pub const LEASES_DIR: &str = "_leases";
/// How often a holder renews its lease.
pub const RENEW: Duration = Duration::from_secs(10);
/// A lease not renewed for this long belongs to a holder that crashed on another machine.
pub const EXPIRY: Duration = Duration::from_secs(90);

/// The content of a lease file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Holder {
    /// Unique per acquisition: tells a renewed lease from one taken over.
    token: String,
    host: String,
    pid: u32,
    shard: usize,
    shards: usize,
    /// Clears or rewrites the whole directory: no other process may write meanwhile.
    exclusive: bool,
    started: String,
}

impl Holder {
    /// Whether a run holding `self` and one holding `other` would write the same units.
    fn conflicts(&self, other: &Holder) -> bool {
        self.exclusive || other.exclusive || self.shards != other.shards
    }

    fn describe(&self) -> String {
        format!(
            "shard {} of {} by process {} on {} since {}",
            self.shard, self.shards, self.pid, self.host, self.started
        )
    }
}

/// A lease file as found: its holder (unless unreadable, e.g. being written) and its age.
struct Found {
    holder: Option<Holder>,
    age: Duration,
    /// The object's version, for a conditional takeover (object stores).
    version: Option<store::Version>,
}

impl Found {
    fn read(path: &Path) -> Result<Option<Found>> {
        if let Some(r) = Location::remote(path)? {
            return Ok(store::get(&r)?.map(|v| Found {
                holder: serde_json::from_slice(&v.bytes).ok(),
                age: SystemTime::now()
                    .duration_since(v.modified)
                    .unwrap_or(Duration::ZERO),
                version: Some(v.version),
            }));
        }
        let meta = match std::fs::metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        let modified = meta.modified().map_err(|e| Error::io(path, e))?;
        let holder = match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes).ok(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        Ok(Some(Found {
            holder,
            // A modification time ahead of this clock counts as fresh.
            age: SystemTime::now()
                .duration_since(modified)
                .unwrap_or(Duration::ZERO),
            version: None,
        }))
    }

    /// Whether the holder is gone: its process ended (same host), or it stopped renewing.
    fn stale(&self) -> bool {
        let dead = self
            .holder
            .as_ref()
            .is_some_and(|h| h.host == host_name() && !process_alive(h.pid));
        dead || self.age > EXPIRY
    }
}

/// The leases this process holds (output directory, lease file, token), for commits to check
/// and for the signal handler to remove.
static HELD: Mutex<Vec<(PathBuf, PathBuf, String)>> = Mutex::new(Vec::new());

/// A held lease; dropping it stops the renewal and removes the file.
pub struct Lease {
    path: PathBuf,
    token: String,
    stop: Arc<(Mutex<bool>, Condvar)>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Lease {
    /// Takes the lease of `shard` on the output directory `out` (`exclusive` for a run that
    /// clears or rewrites the whole directory), or fails with [`Error::Busy`] naming the holder.
    pub fn acquire(out: &Path, shard: Shard, exclusive: bool) -> Result<Lease> {
        let dir = out.join(LEASES_DIR);
        store::create_dir_all(&dir)?;
        let path = dir.join(format!("{}-of-{}.json", shard.index, shard.count));
        let me = Holder {
            token: token(),
            host: host_name(),
            pid: std::process::id(),
            shard: shard.index,
            shards: shard.count,
            exclusive,
            started: now(),
        };
        let busy = |message: String| Error::Busy {
            path: out.to_path_buf(),
            message,
        };
        let held = |found: Found| {
            busy(format!(
                "another run writes this output ({}); run again when it has ended",
                found
                    .holder
                    .map_or("a lease being written".into(), |h| h.describe())
            ))
        };
        // Each round either creates the file or removes a stale one; a third round means others
        // keep taking it.
        let mut created = false;
        for _ in 0..3 {
            if create(&path, &me)? {
                created = true;
                break;
            }
            let Some(found) = Found::read(&path)? else {
                continue;
            };
            if !found.stale() {
                return Err(held(found));
            }
            tracing::warn!(lease = %path.display(), "taking over a stale lease");
            if take_over(&path, &found, &me)? {
                created = true;
                break;
            }
        }
        if !created {
            return Err(busy(format!(
                "could not take the lease {} (others keep taking it)",
                path.display()
            )));
        }
        let lease = Lease::start(out, path, &me)?;
        // Leases of other names that overlap this one: see the module comment.
        for name in store::list_files(&dir)? {
            let other = dir.join(&name);
            if other == lease.path || name.starts_with('.') || !name.ends_with(".json") {
                continue;
            }
            let Some(found) = Found::read(&other)? else {
                continue;
            };
            let conflicts = found.holder.as_ref().is_none_or(|h| me.conflicts(h));
            if conflicts && !found.stale() {
                return Err(held(found));
            }
        }
        Ok(lease)
    }

    /// Registers the lease and starts renewing it (the lease is released if that fails).
    fn start(out: &Path, path: PathBuf, me: &Holder) -> Result<Lease> {
        HELD.lock()
            .unwrap()
            .push((out.to_path_buf(), path.clone(), me.token.clone()));
        let mut lease = Lease {
            path,
            token: me.token.clone(),
            stop: Arc::new((Mutex::new(false), Condvar::new())),
            renewer: None,
        };
        let (stop, path, token) = (lease.stop.clone(), lease.path.clone(), me.token.clone());
        let renewer = std::thread::Builder::new()
            .name("jerex-lease".into())
            .spawn(move || renew(&stop, &path, &token))
            .map_err(|e| Error::io(&lease.path, e))?;
        lease.renewer = Some(renewer);
        Ok(lease)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        *self.stop.0.lock().unwrap() = true;
        self.stop.1.notify_all();
        if let Some(t) = self.renewer.take() {
            let _ = t.join();
        }
        HELD.lock().unwrap().retain(|(_, p, _)| p != &self.path);
        remove_if_mine(&self.path, &self.token);
    }
}

/// Fails when this process held a lease on `dir` (or a directory above it) that another process
/// has since taken over: the caller must not commit anything more there.
pub fn verify(dir: &Path) -> Result<()> {
    let held: Vec<(PathBuf, PathBuf, String)> = HELD.lock().unwrap().clone();
    for (out, path, token) in held {
        if !dir.starts_with(&out) {
            continue;
        }
        let holder = Found::read(&path)?.and_then(|f| f.holder);
        if holder.as_ref().is_none_or(|h| h.token != token) {
            return Err(Error::Busy {
                path: out,
                message: format!(
                    "the lease {} was taken over ({}): this run stopped writing; run again",
                    path.display(),
                    holder.map_or("now absent".into(), |h| format!("now {}", h.describe()))
                ),
            });
        }
    }
    Ok(())
}

/// Removes this process's lease files, for a signal handler about to end the process (it
/// skips the removal rather than wait when the registry is busy).
pub fn release_all() {
    if let Ok(held) = HELD.try_lock() {
        for (_, path, token) in held.iter() {
            remove_if_mine(path, token);
        }
    }
}

fn holder_bytes(me: &Holder) -> Vec<u8> {
    serde_json::to_vec_pretty(me).expect("a holder serializes")
}

/// Creates `path` holding `me`: `Ok(false)` if it exists.
fn create(path: &Path, me: &Holder) -> Result<bool> {
    if let Some(r) = Location::remote(path)? {
        return store::create(&r, holder_bytes(me));
    }
    let mut f = match File::options().write(true).create_new(true).open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(false),
        Err(e) => return Err(Error::io(path, e)),
    };
    let written = f.write_all(&holder_bytes(me)).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(path);
        return Err(Error::io(path, e));
    }
    Ok(true)
}

/// Takes over the stale lease `found` at `path`: `Ok(true)` when `me` now holds it (an object
/// store: replaced only if still the version found), `Ok(false)` when the caller must try to
/// create it again.
fn take_over(path: &Path, found: &Found, me: &Holder) -> Result<bool> {
    if let (Some(r), Some(version)) = (Location::remote(path)?, &found.version) {
        return Ok(store::replace(&r, holder_bytes(me), version)?.is_some());
    }
    remove_stale(path, found.holder.as_ref())?;
    Ok(false)
}

/// Removes the stale lease at `path` whose holder was `stale`. It is first renamed aside, so of
/// two processes taking it over only one removes it; a file that turns out to be another,
/// fresh lease (its taker was quicker) is put back.
fn remove_stale(path: &Path, stale: Option<&Holder>) -> Result<()> {
    let aside = path.with_extension(format!("stale-{}", token()));
    match std::fs::rename(path, &aside) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(path, e)),
    }
    let moved = Found::read(&aside)?.and_then(|f| f.holder);
    let same = match (moved.as_ref(), stale) {
        (Some(m), Some(s)) => m.token == s.token,
        (m, s) => m.is_none() && s.is_none(),
    };
    if !same {
        // Not restored when a third process created the file meanwhile: the lease then is its.
        let _ = std::fs::hard_link(&aside, path);
    }
    std::fs::remove_file(&aside).map_err(|e| Error::io(&aside, e))
}

/// The renewal loop: touches the lease every [`RENEW`] while it is this process's.
fn renew(stop: &(Mutex<bool>, Condvar), path: &Path, token: &str) {
    let mut stopped = stop.0.lock().unwrap();
    while !*stopped {
        let (guard, wait) = stop.1.wait_timeout(stopped, RENEW).unwrap();
        stopped = guard;
        if *stopped || !wait.timed_out() {
            continue;
        }
        if !touch(path, token) {
            tracing::error!(lease = %path.display(), "lost the lease: no more units are committed");
            return;
        }
    }
}

/// Renews the lease at `path` if it is still `token`'s: its modification time (a file), or the
/// object rewritten if still at the version read.
fn touch(path: &Path, token: &str) -> bool {
    let Ok(Some(found)) = Found::read(path) else {
        return false;
    };
    if found.holder.as_ref().is_none_or(|h| h.token != token) {
        return false;
    }
    match (Location::remote(path), &found.version, &found.holder) {
        (Ok(Some(r)), Some(version), Some(h)) => {
            matches!(store::replace(&r, holder_bytes(h), version), Ok(Some(_)))
        }
        _ => File::options()
            .write(true)
            .open(path)
            .and_then(|f| f.set_modified(SystemTime::now()))
            .is_ok(),
    }
}

fn remove_if_mine(path: &Path, token: &str) {
    let mine = store::read_bytes(path)
        .ok()
        .flatten()
        .and_then(|b| serde_json::from_slice::<Holder>(&b).ok())
        .is_some_and(|h| h.token == token);
    if mine {
        let _ = store::remove_file(path);
    }
}

fn token() -> String {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!(
        "{}:{}:{nanos}:{}",
        host_name(),
        std::process::id(),
        rand::random::<u64>()
    );
    blake3::hash(seed.as_bytes()).to_hex()[..16].to_string()
}

fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that many bytes.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown-host".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

fn process_alive(pid: u32) -> bool {
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: Shard = Shard::ALL;

    fn shard(index: usize, count: usize) -> Shard {
        Shard { index, count }
    }

    /// Writes a lease file as another holder would have left it, `age` ago.
    fn plant(out: &Path, name: &str, holder: &Holder, age: Duration) -> PathBuf {
        let path = out.join(LEASES_DIR).join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_vec(holder).unwrap()).unwrap();
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(SystemTime::now() - age)
            .unwrap();
        path
    }

    fn other(host: &str, pid: u32, s: Shard) -> Holder {
        Holder {
            token: token(),
            host: host.into(),
            pid,
            shard: s.index,
            shards: s.count,
            exclusive: false,
            started: "2020-01-01T00:00:00Z".into(),
        }
    }

    fn busy(r: Result<Lease>) -> String {
        match r {
            Err(e @ Error::Busy { .. }) => e.to_string(),
            Err(e) => panic!("not busy: {e}"),
            Ok(_) => panic!("acquired a lease that is held"),
        }
    }

    #[test]
    fn one_process_per_shard_and_shards_of_one_count_side_by_side() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let first = Lease::acquire(out, shard(0, 2), false).unwrap();
        let e = busy(Lease::acquire(out, shard(0, 2), false));
        assert!(
            e.contains("another run writes this output (shard 0 of 2"),
            "{e}"
        );
        let second = Lease::acquire(out, shard(1, 2), false).unwrap();
        // Another shard count overlaps every shard; a whole-directory run excludes all.
        busy(Lease::acquire(out, ONE, false));
        busy(Lease::acquire(out, shard(0, 3), false));
        verify(out).unwrap();
        drop(first);
        assert!(!out.join(LEASES_DIR).join("0-of-2.json").exists());
        busy(Lease::acquire(out, shard(0, 2), true));
        drop(second);
        let all = Lease::acquire(out, ONE, true).unwrap();
        busy(Lease::acquire(out, shard(1, 2), false));
        drop(all);
        // A withdrawn attempt leaves no lease behind.
        let names = std::fs::read_dir(out.join(LEASES_DIR)).unwrap().count();
        assert_eq!(names, 0);
    }

    #[test]
    fn stale_leases_are_taken_over_and_their_holder_stops_committing() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path();
        let me = host_name();
        // A process of this host that is gone: stale at once.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        plant(out, "0-of-1.json", &other(&me, dead, ONE), Duration::ZERO);
        drop(Lease::acquire(out, ONE, false).unwrap());
        // Another host's lease: live while renewed, stale after the expiry.
        plant(
            out,
            "0-of-1.json",
            &other("elsewhere", 1, ONE),
            Duration::from_secs(5),
        );
        let e = busy(Lease::acquire(out, ONE, false));
        assert!(e.contains("on elsewhere"), "{e}");
        plant(out, "0-of-1.json", &other("elsewhere", 1, ONE), EXPIRY * 2);
        let lease = Lease::acquire(out, ONE, false).unwrap();
        verify(&out.join("runs/r1")).unwrap();
        // Taken over in turn (this holder stalled past the expiry): commits must fail.
        plant(
            out,
            "0-of-1.json",
            &other("elsewhere", 1, ONE),
            Duration::ZERO,
        );
        let e = verify(&out.join("runs/r1")).unwrap_err();
        assert!(
            matches!(e, Error::Busy { .. }) && e.to_string().contains("taken over"),
            "{e}"
        );
        drop(lease);
        assert!(
            out.join(LEASES_DIR).join("0-of-1.json").exists(),
            "not ours to remove"
        );
    }
}
