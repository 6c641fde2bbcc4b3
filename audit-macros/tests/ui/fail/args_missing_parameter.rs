use audit_runtime::audited_view;

#[audited_view(args(id, page))]
fn handler(id: u32) -> u32 {
    id
}

fn main() {}
