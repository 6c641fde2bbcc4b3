use audit_runtime::audited_view;
use std::rc::Rc;

#[audited_view]
async fn handler() -> u32 {
    let counter = Rc::new(1);
    tokio::task::yield_now().await;
    *counter
}

fn require_send<T: Send>(_: T) {}

fn main() {
    require_send(handler());
}
