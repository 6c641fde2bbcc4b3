use audit_runtime::disable_audit;

#[disable_audit(name = "x")]
fn handler() {}

fn main() {}
