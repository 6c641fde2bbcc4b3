use audit_runtime::Audited;

#[derive(Audited)]
struct Point(i32, i32);

fn main() {}
