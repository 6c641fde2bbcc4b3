use audit_runtime::Audited;

#[derive(Audited)]
struct Poll {
    id: i64,
    #[audit(hide)]
    question: String,
}

fn main() {}
