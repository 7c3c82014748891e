//! The deploy lock: one deploy per target at a time.
//!
//! `flock(2)` on `TARGET/.pushdeploy/lock`. The kernel drops the lock when the holder dies, even
//! by SIGKILL, so a crashed deploy never blocks the next one. The file is opened close-on-exec,
//! so a build's stray children cannot keep it held.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot lock {}: {source}", path.display())]
    Lock { path: PathBuf, source: std::io::Error },
}

/// A held deploy lock; dropping it releases the lock.
#[derive(Debug)]
pub struct DeployLock {
    _lock: Flock<File>,
}

/// Takes the lock at `path`, waiting for the deploy that holds it. `on_wait` is called once
/// before waiting, with the holder's pid when it is known.
pub fn acquire(path: &Path, on_wait: impl FnOnce(Option<u32>)) -> Result<DeployLock, Error> {
    let error = |source: std::io::Error| Error::Lock { path: path.to_owned(), source };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(error)?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => lock,
        Err((mut file, Errno::EWOULDBLOCK)) => {
            let mut text = String::new();
            let holder = file.read_to_string(&mut text).ok().and_then(|_| text.trim().parse().ok());
            on_wait(holder);
            lock_blocking(file).map_err(error)?
        }
        Err((_, errno)) => return Err(error(errno.into())),
    };
    // Leave our pid for the next waiter's message; the lock does not depend on it.
    let _ = lock.set_len(0).and_then(|()| lock.rewind()).and_then(|()| {
        write!(lock, "{}", std::process::id())?;
        lock.flush()
    });
    Ok(DeployLock { _lock: lock })
}

fn lock_blocking(mut file: File) -> Result<Flock<File>, std::io::Error> {
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(lock) => return Ok(lock),
            Err((back, Errno::EINTR)) => file = back,
            Err((_, errno)) => return Err(errno.into()),
        }
    }
}
