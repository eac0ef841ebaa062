//! The memkit kernel (work in progress in its own issue).
fn main() {}
