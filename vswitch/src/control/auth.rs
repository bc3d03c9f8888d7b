//! Who may use the control socket.
//!
//! The socket file is mode 0600, but the mode is set after bind (there is a short
//! window with the umask's mode) and filesystem permissions do not survive a socket
//! passed between processes, so every accepted peer is also checked by its kernel
//! credentials (`SO_PEERCRED`), which cannot be forged.

use std::io;
use std::os::fd::RawFd;

/// Whether a peer with `peer_uid` may talk to a daemon whose socket is owned by
/// `owner_uid` (the daemon's effective uid): root always, otherwise only the owner.
pub fn peer_allowed(peer_uid: u32, owner_uid: u32) -> bool {
    peer_uid == 0 || peer_uid == owner_uid
}

/// Kernel credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PeerCred {
    pub pid: i32,
    pub uid: u32,
}

/// Reads `SO_PEERCRED` of a connected Unix socket.
pub(crate) fn peer_cred(fd: RawFd) -> io::Result<PeerCred> {
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `cred` is a valid, writable ucred and `len` holds its exact size, as
    // SO_PEERCRED requires; the kernel writes at most `len` bytes.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PeerCred {
        pid: cred.pid,
        uid: cred.uid,
    })
}

/// The daemon's effective uid: the owner of the socket it binds.
pub(crate) fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_and_owner_are_allowed_others_are_not() {
        assert!(peer_allowed(0, 1000));
        assert!(peer_allowed(1000, 1000));
        assert!(peer_allowed(0, 0));
        assert!(!peer_allowed(1001, 1000));
        assert!(!peer_allowed(1000, 0));
        assert!(!peer_allowed(u32::MAX, 0)); // the overflow uid ("nobody" across userns)
    }

    #[test]
    fn reads_own_credentials_over_a_socketpair() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let cred = peer_cred(std::os::fd::AsRawFd::as_raw_fd(&a)).expect("SO_PEERCRED");
        assert_eq!(cred.uid, effective_uid());
        assert_eq!(cred.pid as u32, std::process::id());
    }
}
