//! Starting processes inside a pod: its network namespace, a fresh UTS namespace with the
//! pod's host name, and a fresh mount namespace in which the pod's own resolv.conf, hosts and
//! hostname files are bind-mounted over the host's. Every container and every `exec` gets
//! namespaces set up the same way, so they all see the same pod.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Where and how a pod's processes run.
#[derive(Debug, Clone, Default)]
pub struct Sandbox {
    /// `/run/netns/<name>`; `None` runs in the agent's own network (non-root fallback).
    pub netns: Option<PathBuf>,
    /// Host name in a new UTS namespace; `None` shares the host's (non-root fallback).
    pub hostname: Option<String>,
    /// (pod file, path it is mounted on) in a new mount namespace.
    pub bind_mounts: Vec<(PathBuf, PathBuf)>,
}

impl Sandbox {
    /// A pod's sandbox when the agent runs as root.
    pub fn isolated(netns: PathBuf, hostname: &str, pod_dir: &Path) -> Sandbox {
        let mut mounts = vec![
            (
                pod_dir.join("resolv.conf"),
                PathBuf::from("/etc/resolv.conf"),
            ),
            (pod_dir.join("hosts"), PathBuf::from("/etc/hosts")),
        ];
        if Path::new("/etc/hostname").exists() {
            mounts.push((pod_dir.join("hostname"), PathBuf::from("/etc/hostname")));
        }
        Sandbox {
            netns: Some(netns),
            hostname: Some(hostname.to_string()),
            bind_mounts: mounts,
        }
    }
}

#[derive(Debug)]
pub struct ProcessSpec {
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    /// Give the process this terminal (the pty's replica side) as stdin/stdout/stderr and make
    /// it the controlling terminal of a new session.
    pub tty: Option<OwnedFd>,
    pub stdin: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum SpawnError {
    #[error("executable file not found in $PATH: {0:?}")]
    NotFound(String),
    #[error("empty command")]
    Empty,
    #[error("cannot open the pod's network namespace {path}: {source}")]
    Netns {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start {program:?}: {source}")]
    Start {
        program: String,
        source: std::io::Error,
    },
}

/// The PATH a container sees (kubelet takes it from the image; here it is the host's).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Looks `program` up on `path` like execvp does (names with a `/` are used as they are).
pub fn find_program(program: &str, path: &str) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    use std::os::unix::fs::PermissionsExt;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Starts the process in the sandbox. It gets its own process group (or session, with a tty),
/// so signals reach its children too, and it is killed if the agent dies.
pub fn spawn(sandbox: &Sandbox, spec: ProcessSpec) -> Result<Child, SpawnError> {
    let program = spec.argv.first().ok_or(SpawnError::Empty)?.clone();
    let path_var = spec
        .env
        .iter()
        .rev()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or(DEFAULT_PATH);
    let resolved = find_program(&program, path_var).ok_or(SpawnError::NotFound(program.clone()))?;

    let netns = match &sandbox.netns {
        Some(path) => Some(OwnedFd::from(std::fs::File::open(path).map_err(
            |source| SpawnError::Netns {
                path: path.clone(),
                source,
            },
        )?)),
        None => None,
    };
    // Everything the child needs is prepared here: between fork and exec it must not allocate.
    let hostname = sandbox.hostname.as_ref().map(|h| h.as_bytes().to_vec());
    let mounts: Vec<(CString, CString)> = sandbox
        .bind_mounts
        .iter()
        .map(|(src, dst)| {
            (
                CString::new(src.as_os_str().as_bytes()).expect("no NUL in path"),
                CString::new(dst.as_os_str().as_bytes()).expect("no NUL in path"),
            )
        })
        .collect();
    let root = CString::new("/").expect("static");
    let new_namespaces = hostname.is_some() || !mounts.is_empty();
    let with_tty = spec.tty.is_some();

    let mut cmd = Command::new(&resolved);
    cmd.arg0(&program)
        .args(&spec.argv[1..])
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .kill_on_drop(false);
    if !spec.env.iter().any(|(k, _)| k == "PATH") {
        cmd.env("PATH", DEFAULT_PATH);
    }
    if let Some(dir) = &spec.working_dir {
        cmd.current_dir(dir);
    }
    match &spec.tty {
        Some(tty) => {
            let dup = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
            let err = |source| SpawnError::Start {
                program: program.clone(),
                source,
            };
            cmd.stdin(dup(tty).map_err(err)?)
                .stdout(dup(tty).map_err(err)?)
                .stderr(dup(tty).map_err(err)?);
        }
        None => {
            cmd.stdin(if spec.stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
            cmd.process_group(0);
        }
    }
    let netns_fd = netns.as_ref().map(|fd| fd.as_raw_fd());
    // SAFETY: the closure only makes system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(fd) = netns_fd
                && libc::setns(fd, libc::CLONE_NEWNET) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            if new_namespaces {
                if libc::unshare(libc::CLONE_NEWUTS | libc::CLONE_NEWNS) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // keep our bind mounts out of the host's mount tree
                let flags = libc::MS_REC | libc::MS_PRIVATE;
                if libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    flags,
                    std::ptr::null(),
                ) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                if let Some(name) = &hostname
                    && libc::sethostname(name.as_ptr().cast(), name.len()) != 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                for (src, dst) in &mounts {
                    if libc::mount(
                        src.as_ptr(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
            }
            if with_tty {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|source| SpawnError::Start {
        program: program.clone(),
        source,
    })?;
    drop(netns);
    drop(spec.tty);
    Ok(child)
}

/// Sends `signal` to the process group led by `pid` (the process and its children).
pub fn signal_group(pid: u32, signal: Signal) {
    let _ = killpg(Pid::from_raw(pid as i32), signal);
}

/// The exit code a shell would report: the code, or 128 + the signal number.
pub fn exit_code(status: std::process::ExitStatus) -> (i32, Option<i32>) {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (-1, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_lookup() {
        assert_eq!(
            find_program("sh", DEFAULT_PATH).map(|p| p.is_absolute()),
            Some(true)
        );
        assert_eq!(find_program("/x/y", ""), Some(PathBuf::from("/x/y")));
        assert_eq!(find_program("no-such-program-here", DEFAULT_PATH), None);
        assert_eq!(find_program("sh", ""), None);
    }

    #[tokio::test]
    async fn runs_without_sandbox_and_reports_codes() {
        let spec = ProcessSpec {
            argv: vec!["sh".into(), "-c".into(), "echo $GREETING; exit 3".into()],
            env: vec![("GREETING".into(), "hi".into())],
            working_dir: None,
            tty: None,
            stdin: false,
        };
        let child = spawn(&Sandbox::default(), spec).unwrap();
        let out = child.wait_with_output().await.unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(exit_code(out.status), (3, None));
        let missing = ProcessSpec {
            argv: vec!["no-such-program-here".into()],
            env: vec![],
            working_dir: None,
            tty: None,
            stdin: false,
        };
        let err = spawn(&Sandbox::default(), missing).unwrap_err();
        assert!(matches!(err, SpawnError::NotFound(_)), "{err}");
    }
}
