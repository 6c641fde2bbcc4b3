//! The `audit` command line, built inside this crate so its tests can run it
//! (`CARGO_BIN_EXE_audit_cli`): Cargo builds a package's own binaries for its integration tests,
//! not those of a dependency. It has another name than `audit-runtime`'s `audit` because two
//! binaries of one name in a workspace overwrite each other in the target directory.

fn main() {
    audit_runtime::cli::main()
}
