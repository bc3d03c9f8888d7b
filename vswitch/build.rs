//! Compiles the switch's own XDP programs (`bpf/uplink_filter.c`, the uplink's
//! filter, and `bpf/port_fastpath.c`, the in-kernel fast path of pod ports) to BPF
//! objects that vswitchd embeds (`include_bytes!`) and loads with libbpf at run time.
//!
//! clang is already required by the vendored libxdp (xsk-rs builds its BPF objects
//! with it); `CLANG` names another binary. The programs are self-contained (no kernel
//! or libbpf headers: `bpf/common.h` stands in for them), so nothing else is needed.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=CLANG");
    println!("cargo:rerun-if-changed=bpf/common.h");
    println!("cargo:rerun-if-changed=bpf/fastpath_vxlan.h");
    println!("cargo:rerun-if-changed=bpf/fastpath_nat.h");
    for name in ["uplink_filter", "port_fastpath"] {
        compile(name);
    }
}

fn compile(name: &str) {
    let src = format!("bpf/{name}.c");
    println!("cargo:rerun-if-changed={src}");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let obj = out.join(format!("{name}.o"));
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    let status = Command::new(&clang)
        .args([
            "-O2", "-g", "-target", "bpf", "-Wall", "-Werror", "-c", &src, "-o",
        ])
        .arg(&obj)
        .status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => panic!("{clang} failed to compile {src} ({s}); see its output above"),
        Err(e) => panic!(
            "cannot run {clang} to compile {src}: {e} (install clang: scripts/install-deps.sh, \
             or set CLANG)"
        ),
    }
}
