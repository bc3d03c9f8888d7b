//! The pod's network namespace (`CNI_NETNS`): opened once, and entered by a
//! dedicated thread whenever something must happen inside it.
//!
//! setns(2) changes only the calling thread, so the work runs on a thread of its
//! own that ends with the work: no other code of the plugin (the control-socket
//! client, the IPAM plugin we start) ever runs in the pod's namespace by mistake.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use super::error::{CniError, CniResult, INTERNAL, UNKNOWN_CONTAINER};

/// `NSFS_MAGIC` from `linux/magic.h`: the file system of namespace files
/// (`/proc/PID/ns/net`, and the bind mounts of them in `/run/netns`).
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// An open network namespace file.
pub struct Netns {
    file: File,
}

impl Netns {
    /// Opens `path` and checks that it is a namespace. A path that does not exist
    /// means the container is gone (code 3); anything else that is not a namespace
    /// is a bad `CNI_NETNS` (code 4).
    pub fn open(path: &Path) -> CniResult<Netns> {
        let file = File::open(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                CniError::new(
                    UNKNOWN_CONTAINER,
                    "container network namespace does not exist",
                    format!("CNI_NETNS {}", path.display()),
                )
            } else {
                CniError::env(format!("CNI_NETNS {}: {e}", path.display()))
            }
        })?;
        // SAFETY: statfs is plain old data; all-zero is a valid value to fill in.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid open fd and a valid out pointer.
        if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
            return Err(CniError::env(format!(
                "CNI_NETNS {}: {}",
                path.display(),
                io::Error::last_os_error()
            )));
        }
        if st.f_type as i64 != NSFS_MAGIC {
            return Err(CniError::env(format!(
                "CNI_NETNS {} is not a network namespace file",
                path.display()
            )));
        }
        Ok(Netns { file })
    }

    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }

    /// Runs `f` on a new thread inside this namespace and returns its result.
    pub fn run<T, F>(&self, f: F) -> CniResult<T>
    where
        T: Send,
        F: FnOnce() -> CniResult<T> + Send,
    {
        let fd = self.fd();
        std::thread::scope(|s| {
            let h = s.spawn(move || {
                // SAFETY: fd is an open namespace file (checked in `open`) that
                // outlives this scoped thread; setns affects this thread only.
                if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                    return Err(CniError::kernel(format!(
                        "entering the container's network namespace: {}",
                        io::Error::last_os_error()
                    )));
                }
                f()
            });
            h.join().unwrap_or_else(|_| {
                Err(CniError::new(
                    INTERNAL,
                    "internal error",
                    "the thread working in the container's namespace panicked",
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_namespace() {
        let e = Netns::open(Path::new("/nonexistent/netns"))
            .err()
            .expect("missing");
        assert_eq!(e.code, 3);
        let e = Netns::open(Path::new("/proc/self/status"))
            .err()
            .expect("regular file");
        assert_eq!(e.code, 4);
        assert!(e.details.contains("not a network namespace"), "{e}");
    }

    #[test]
    fn own_namespace_is_one() {
        let ns = Netns::open(Path::new("/proc/self/ns/net")).expect("own netns");
        // Entering our own namespace needs CAP_SYS_ADMIN; only check it runs `f`
        // where that is allowed.
        if unsafe { libc::geteuid() } == 0 {
            assert_eq!(ns.run(|| Ok(7)).expect("run"), 7);
        }
    }
}
