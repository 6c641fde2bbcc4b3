//! Compile-fail and pass tests of the macros: one error per fail file, with its expected `.stderr`.
//!
//! The `.stderr` files are the compiler's words, which change between compiler versions, so they
//! are compared only on the toolchain that wrote them, recorded in `tests/ui/toolchain` (the
//! first three words of `rustc --version`: release and commit). On any other toolchain the test
//! still checks that each fail case fails to compile and each pass case compiles and runs, without
//! comparing messages; it says so on stderr.
//!
//! Regenerate with `TRYBUILD=overwrite cargo test -p audit-macros --test ui` and review the diff:
//! that also records the current toolchain in `tests/ui/toolchain`.

use std::path::{Path, PathBuf};
use std::process::Command;

const FAIL: &str = "tests/ui/fail";
const PASS: &str = "tests/ui/pass/*.rs";
const TOOLCHAIN_FILE: &str = "tests/ui/toolchain";

#[test]
fn ui() {
    let version = rustc_version();
    let current = toolchain_id(&version);
    let overwrite = std::env::var_os("TRYBUILD").is_some_and(|v| v == "overwrite");
    if overwrite {
        std::fs::write(TOOLCHAIN_FILE, format!("{}\n", version.trim()))
            .expect("record the toolchain");
    }
    let pinned = std::fs::read_to_string(TOOLCHAIN_FILE).expect("tests/ui/toolchain");
    let pinned = toolchain_id(&pinned);

    let t = trybuild::TestCases::new();
    if overwrite || current == pinned {
        t.compile_fail(format!("{FAIL}/*.rs"));
    } else {
        eprintln!(
            "ui: the .stderr files were written by `{pinned}`, this is `{current}`: checking that \
             each fail case fails and each pass case passes, without comparing messages"
        );
        // trybuild has no mode that skips the comparison, but with `TRYBUILD=overwrite` a fail
        // case passes exactly when it fails to compile (and a case that compiles is still an
        // error). Overwrite copies of the cases, without their `.stderr`, so the files under
        // review are never touched.
        let copies = copy_fail_cases();
        std::env::set_var("TRYBUILD", "overwrite");
        t.compile_fail(copies.join("*.rs"));
    }
    t.pass(PASS);
}

/// `rustc 1.95.0 (59807616e 2026-04-14)` → `rustc 1.95.0 (59807616e`: the release and the commit,
/// without a vendor's suffix.
fn toolchain_id(version: &str) -> String {
    version
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `rustc --version` of the compiler trybuild will use (cargo runs the same `rustc`, or `$RUSTC`).
fn rustc_version() -> String {
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .arg("--version")
        .output()
        .expect("rustc --version runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_fail_cases() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-unpinned/fail");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the copy directory");
    for entry in std::fs::read_dir(FAIL).expect("tests/ui/fail") {
        let path = entry.expect("a fail case").path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_name().expect("a file name");
            std::fs::copy(&path, dir.join(name)).expect("copy a fail case");
        }
    }
    dir
}

#[test]
fn toolchain_ids_keep_release_and_commit() {
    assert_eq!(
        toolchain_id("rustc 1.95.0 (59807616e 2026-04-14)\n"),
        "rustc 1.95.0 (59807616e"
    );
    assert_eq!(
        toolchain_id("rustc 1.95.0 (59807616e 2026-04-14) (Fedora 1.95.0-1.fc42)"),
        "rustc 1.95.0 (59807616e"
    );
    assert_ne!(
        toolchain_id("rustc 1.96.0-nightly (0123abcde 2026-05-01)"),
        toolchain_id("rustc 1.96.0-nightly (fedcba987 2026-05-02)")
    );
}
