// Handler names are `module::function` and `module::Type::function`, built from `module_path!()`
// and the item's name: the module of the `impl` block (not the type's), the type's bare name (no
// generic arguments, not the trait), never a closure. Each case is one the compiler's own path
// for the function spells differently.
#![allow(dead_code)]

use audit_runtime::{audited_view, disable_audit, registry};

mod model {
    pub struct Cache<T>(pub T);
    pub struct Worker;
    pub trait Tick {
        fn tick(&self) -> u8;
    }
}

mod handlers {
    use super::model::{Cache, Tick, Worker};
    use audit_runtime::{audited_view, disable_audit};

    impl<T> Cache<T> {
        #[audited_view]
        pub fn get(&self) -> &T {
            &self.0
        }
    }

    impl Tick for Worker {
        #[audited_view]
        fn tick(&self) -> u8 {
            1
        }
    }

    impl Worker {
        #[disable_audit]
        pub async fn stop() {}
    }
}

pub fn outer() -> u8 {
    let f = || {
        #[audited_view]
        fn inner() -> u8 {
            2
        }
        inner()
    };
    f()
}

#[audited_view]
fn free() {}

#[disable_audit]
async fn free_disabled() {}

fn main() {
    let root = module_path!();
    let names: Vec<&str> = registry::views().iter().map(|v| v.full_name()).collect();
    for (name, audited) in [
        (format!("{root}::handlers::Cache::get"), true),
        (format!("{root}::handlers::Worker::tick"), true),
        (format!("{root}::handlers::Worker::stop"), false),
        (format!("{root}::outer::inner"), true),
        (format!("{root}::free"), true),
        (format!("{root}::free_disabled"), false),
    ] {
        let view = registry::get_view(&name).unwrap_or_else(|_| panic!("{name} in {names:?}"));
        assert_eq!(view.audited, audited, "{name}");
    }
    assert_eq!(names.len(), 6, "{names:?}");
}
