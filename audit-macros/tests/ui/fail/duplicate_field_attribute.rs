use audit_runtime::Audited;

#[derive(Audited)]
struct Poll {
    id: i64,
    #[audit(mask, mask)]
    question: String,
}

fn main() {}
