use audit_runtime::audited_view;

#[audited_view]
const fn handler() -> u32 {
    1
}

fn main() {}
