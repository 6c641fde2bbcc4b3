//! The `audit` command line. See `audit --help` and the `cli` module of `audit-runtime`.

fn main() {
    audit_runtime::cli::main()
}
