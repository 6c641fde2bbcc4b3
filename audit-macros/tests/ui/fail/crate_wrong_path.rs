// `crate = "..."` must name the runtime: a wrong path does not compile (so the pass case
// `crate_override.rs` proves the path is used).
#[audit_runtime::audited_view(crate = "some::wrong::path")]
fn handler() -> u8 {
    1
}

fn main() {}
