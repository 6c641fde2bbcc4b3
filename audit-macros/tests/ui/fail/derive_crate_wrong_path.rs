// `#[audit(crate = "...")]` must name the runtime: a wrong path does not compile (so the pass case
// `crate_override.rs` proves the path is used).
#[derive(audit_runtime::Audited)]
#[audit(crate = "some::wrong::path")]
struct Model {
    id: i64,
}

fn main() {}
