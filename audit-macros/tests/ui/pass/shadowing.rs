// Generated code must not depend on the user's names: everything below shadows what an expansion
// could carelessly refer to.
#![allow(dead_code, non_camel_case_types)]

mod user_code {
    type Result = ();
    struct Option;
    mod inventory {}
    mod audit_runtime {}
    mod core {}
    mod std {}
    type String = u8;

    #[::audit_runtime::audited_view(args(id))]
    pub fn handler(id: u32) -> u32 {
        id
    }

    #[::audit_runtime::audited_view]
    pub async fn async_handler() -> ::core::result::Result<u8, ::std::io::Error> {
        Ok(1)
    }

    #[::audit_runtime::disable_audit]
    pub fn disabled() {}

    #[derive(::audit_runtime::Audited)]
    pub struct Model {
        pub id: i64,
        pub name: ::std::string::String,
    }
}

fn main() {
    assert_eq!(user_code::handler(3), 3);
}
