mod user {
    include!(concat!(env!("OUT_DIR"), "/user.rs"));
}
fn main() {}
