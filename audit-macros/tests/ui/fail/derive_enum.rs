use audit_runtime::Audited;

#[derive(Audited)]
enum Status {
    On,
    Off,
}

fn main() {}
