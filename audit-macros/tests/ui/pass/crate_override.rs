// `crate = "..."` for a re-exported runtime, as serde's `crate` attribute.
mod reexport {
    pub use audit_runtime as rt;
}

#[audit_runtime::audited_view(crate = "reexport::rt")]
fn handler() -> u8 {
    1
}

#[derive(audit_runtime::Audited)]
#[audit(crate = "reexport::rt")]
struct Model {
    id: i64,
}

fn main() {
    assert_eq!(handler(), 1);
    let _ = Model { id: 1 };
}
