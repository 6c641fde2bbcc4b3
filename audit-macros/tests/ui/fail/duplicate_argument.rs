use audit_runtime::audited_view;

#[audited_view(name = "a", name = "b")]
fn handler() {}

fn main() {}
