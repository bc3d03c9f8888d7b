//! Facts about a kernel network interface: index, MAC, MTU, existence.

use std::ffi::CString;
use std::io;

/// The interface's index, or `None` if there is no such interface.
pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: c is a valid NUL-terminated string.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

fn sysfs(name: &str, attr: &str) -> io::Result<String> {
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    Ok(
        std::fs::read_to_string(format!("/sys/class/net/{name}/{attr}"))?
            .trim()
            .to_string(),
    )
}

/// The interface's MAC address (zeros when unknown).
pub fn mac(name: &str) -> [u8; 6] {
    sysfs(name, "address")
        .ok()
        .and_then(|s| s.parse::<crate::wire::MacAddr>().ok())
        .map(|m| m.0)
        .unwrap_or_default()
}

/// The interface's MTU (1500 when unknown).
pub fn mtu(name: &str) -> u32 {
    sysfs(name, "mtu")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1500)
}

/// Checks a user-supplied interface name before it reaches the kernel.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > 15 {
        return Err(format!("interface name '{name}' must be 1 to 15 bytes"));
    }
    if name == "."
        || name == ".."
        || name
            .bytes()
            .any(|b| b == b'/' || b == 0 || b.is_ascii_whitespace() || b == b':')
    {
        return Err(format!("'{name}' is not a valid interface name"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_exists_and_junk_does_not() {
        assert_eq!(ifindex("lo"), Some(1));
        assert_eq!(ifindex("no-such-if0"), None);
        assert_eq!(ifindex("bad\0name"), None);
        assert_eq!(mtu("lo"), 65536);
    }

    #[test]
    fn names_are_validated() {
        assert!(validate_name("veth0").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a-very-long-interface-name").is_err());
        assert!(validate_name("../etc").is_err());
        assert!(validate_name("a b").is_err());
    }
}
