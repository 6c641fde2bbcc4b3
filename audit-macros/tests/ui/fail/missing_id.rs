use audit_runtime::Audited;

#[derive(Audited)]
struct Poll {
    question: String,
}

fn main() {}
