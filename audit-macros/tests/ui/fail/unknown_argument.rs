use audit_runtime::audited_view;

#[audited_view(group = "x")]
fn handler() {}

fn main() {}
