//! The current OS process as a [`Process`] document: computed once per process id
//! (so a forked child computes its own), never on the request path after the first time.

use crate::document::Process;
use bson::oid::ObjectId;
use chrono::{DateTime, TimeZone, Utc};
use std::sync::Mutex;

/// What identifies a process, before it is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProcessInfo {
    /// Program name: the basename of `argv[0]`, or the sub-command of a `manage.py`-style launcher.
    pub name: String,
    /// The remaining arguments joined by spaces, `None` when there are none.
    pub args: Option<String>,
    /// Host name.
    pub machine: String,
    /// OS user.
    pub user: String,
    /// Process id.
    pub pid: u32,
    /// Start time, UTC.
    pub creation_time: DateTime<Utc>,
}

impl ProcessInfo {
    /// The info of this process (cached per pid).
    pub(crate) fn current() -> ProcessInfo {
        static CACHE: Mutex<Option<ProcessInfo>> = Mutex::new(None);
        let pid = std::process::id();
        let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
        match &*cache {
            Some(info) if info.pid == pid => info.clone(),
            _ => {
                let info = Self::compute(pid);
                *cache = Some(info.clone());
                info
            }
        }
    }

    fn compute(pid: u32) -> ProcessInfo {
        let argv: Vec<String> = std::env::args_os()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let (name, args) = name_and_args(&argv);
        ProcessInfo {
            name,
            args,
            machine: hostname::get()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| "unknown".into()),
            user: os_user(),
            pid,
            creation_time: start_time().unwrap_or_else(Utc::now),
        }
    }

    /// The document to upsert (a fresh id; the store returns the stored one if it exists).
    pub(crate) fn to_process(&self) -> Process {
        Process {
            id: ObjectId::new(),
            interlink_id: None,
            name: self.name.clone(),
            args: self.args.clone(),
            machine: self.machine.clone(),
            user: self.user.clone(),
            pid: self.pid as i32,
            creation_time: self.creation_time,
        }
    }
}

/// `name` and `args` from an argv: `manage.py`-style launchers (by basename) report their
/// sub-command; an empty argv (embedded interpreters) gives `unknown`. Secrets in the arguments (a
/// connection string with a password, the value of `--password`-like flags) are masked: the
/// process document is stored in the trail like everything else.
pub(crate) fn name_and_args(argv: &[String]) -> (String, Option<String>) {
    let base = |s: &str| {
        std::path::Path::new(s)
            .file_name()
            .map_or_else(|| s.to_owned(), |f| f.to_string_lossy().into_owned())
    };
    let (name, rest) = match argv {
        [] => return ("unknown".into(), None),
        [first, sub, rest @ ..] if base(first) == "manage.py" => (sub.clone(), rest),
        [first, rest @ ..] => (base(first), rest),
    };
    let args = if rest.is_empty() {
        None
    } else {
        Some(crate::redact::default_policy().args(rest).join(" "))
    };
    (name, args)
}

fn os_user() -> String {
    // The uid from /proc, resolved through /etc/passwd; the environment as a fallback.
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .and_then(|r| r.split_whitespace().next().map(str::to_owned))
            })
        });
    if let Some(uid) = uid {
        if let Ok(passwd) = std::fs::read_to_string("/etc/passwd") {
            for line in passwd.lines() {
                let f: Vec<&str> = line.split(':').collect();
                if f.len() > 2 && f[2] == uid {
                    return f[0].to_owned();
                }
            }
        }
        return uid;
    }
    std::env::var("USER")
        .or_else(|_| std::env::var("USERNAME"))
        .unwrap_or_else(|_| "unknown".into())
}

/// The process start time from `/proc` (boot time + start ticks), at the kernel's clock-tick
/// precision. `None` off Linux; the caller then uses the first call's time.
fn start_time() -> Option<DateTime<Utc>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Field 22 (starttime), counted after the parenthesised command name, which may hold spaces.
    let after = &stat[stat.rfind(')')? + 2..];
    let ticks: u64 = after.split_whitespace().nth(19)?.parse().ok()?;
    let btime: i64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("btime ").and_then(|v| v.trim().parse().ok()))?;
    // USER_HZ is 100 on every Linux ABI in use.
    let ms = btime * 1000 + (ticks as i64) * 10;
    Utc.timestamp_millis_opt(ms).single()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn names_follow_the_original() {
        assert_eq!(
            name_and_args(&v(&["foo", "b", "a", "r"])),
            ("foo".into(), Some("b a r".into()))
        );
        assert_eq!(
            name_and_args(&v(&["manage.py", "foo", "b", "a", "r"])),
            ("foo".into(), Some("b a r".into()))
        );
        assert_eq!(
            name_and_args(&v(&["./manage.py", "runserver"])),
            ("runserver".into(), None)
        );
        assert_eq!(
            name_and_args(&v(&["/usr/bin/server"])),
            ("server".into(), None)
        );
        assert_eq!(name_and_args(&[]), ("unknown".into(), None));
    }

    #[test]
    fn secrets_in_arguments_are_masked() {
        let (_, args) = name_and_args(&v(&[
            "server",
            "--db",
            "mongodb://audit:s3cr3t-Pw0rd-x7Qz9LmN2bV4cX8kJ1hG5fD3sA6@db:27017/audit",
            "--password",
            "s3cr3t-flag-value-x7Qz9LmN2bV4cX8kJ1hG5f",
            "--api-token=s3cr3t-inline-x7Qz9LmN2bV4cX8kJ1hG5",
            "--port",
            "8000",
        ]));
        let args = args.unwrap();
        assert!(!args.contains("s3cr3t"), "{args}");
        assert!(
            args.contains("--port 8000") && args.contains("audit:****@db"),
            "{args}"
        );
    }

    #[test]
    fn current_process_is_plausible() {
        let test_start = Utc::now();
        let p = ProcessInfo::current();
        assert_eq!(p.pid, std::process::id());
        // The start time comes from the kernel, not from the `Utc::now` fallback: the fallback
        // would be the time of the first call, which is not what `/proc` says.
        #[cfg(target_os = "linux")]
        {
            let kernel = start_time().expect("the start time is readable from /proc on Linux");
            assert_eq!(p.creation_time, kernel, "not the fallback");
        }
        // The process started before this test did (the boot time in /proc is whole seconds, so
        // the start can only come out earlier than it was, never later), and not days ago.
        assert!(
            p.creation_time <= test_start,
            "{} > {test_start}",
            p.creation_time
        );
        assert!(test_start - p.creation_time < chrono::Duration::hours(1));
        assert_eq!(ProcessInfo::current(), p, "cached");
    }
}
