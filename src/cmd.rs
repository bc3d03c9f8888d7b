//! Running external commands (ip, ethtool, ping, vsctl) with a time limit and errors
//! that say what failed: the command line, the exit status and stderr.

use crate::{Result, err};
use std::io::Read;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// Time limit of [`run`]: generous for `ip`/`ethtool`/`vsctl`, short enough that a hung
/// daemon fails the test instead of hanging CI.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The command line as a shell would show it, for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion (at most [`DEFAULT_TIMEOUT`]) and returns its stdout; a
/// non-zero exit is an error carrying stderr.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = run_timeout(cmd, DEFAULT_TIMEOUT)?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Error unless `out` is a success.
pub fn check(cmd: &Command, out: &Output) -> Result<()> {
    if out.status.success() {
        return Ok(());
    }
    Err(err!(
        "`{}` failed ({}): {}{}",
        describe(cmd),
        status_text(out.status),
        String::from_utf8_lossy(&out.stderr).trim(),
        if out.stdout.is_empty() {
            String::new()
        } else {
            format!(" [stdout: {}]", String::from_utf8_lossy(&out.stdout).trim())
        }
    ))
}

/// "exit 1", "signal 9".
pub fn status_text(s: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (s.code(), s.signal()) {
        (Some(c), _) => format!("exit {c}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".into(),
    }
}

/// Runs `cmd` with stdin closed and output captured; kills it after `timeout`. Returns
/// the output whatever the exit status (use [`check`]).
pub fn run_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| err!("cannot start `{}`: {e}", describe(cmd)))?;
    // Drain both pipes on threads: a child that fills one pipe while we wait would
    // otherwise block forever.
    let out = drain(child.stdout.take());
    let errs = drain(child.stderr.take());
    let status = match wait_deadline(&mut child, timeout)? {
        Some(s) => s,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = errs.join().unwrap_or_default();
            return Err(err!(
                "`{}` did not finish within {:?} (killed); stderr: {}",
                describe(cmd),
                timeout,
                String::from_utf8_lossy(&stderr).trim()
            ));
        }
    };
    Ok(Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: errs.join().unwrap_or_default(),
    })
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` at most `timeout`; `None` if it is still running then.
pub fn wait_deadline(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends `sig` to process `pid`. Only used on processes this library started.
pub fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid).map_err(|_| err!("pid {pid} out of range"))?;
    // SAFETY: kill(2) takes plain integers; a stale pid gives ESRCH, not UB.
    if unsafe { libc::kill(pid, sig) } != 0 {
        return Err(err!(
            "kill({pid}, {sig}): {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_stderr_and_status() {
        let e =
            run(Command::new("sh").args(["-c", "echo oops >&2; exit 3"])).expect_err("must fail");
        assert!(e.0.contains("exit 3") && e.0.contains("oops"), "{e}");
    }

    #[test]
    fn returns_stdout() {
        assert_eq!(
            run(Command::new("sh").args(["-c", "echo hi"])).expect("sh"),
            "hi\n"
        );
    }

    #[test]
    fn kills_on_timeout() {
        let t = Instant::now();
        let e = run_timeout(Command::new("sleep").arg("10"), Duration::from_millis(200))
            .expect_err("timeout");
        assert!(e.0.contains("did not finish"), "{e}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
