//! The memkit command.
fn main() {}
