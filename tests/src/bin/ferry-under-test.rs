//! The `ferry` binary as the integration tests run it (Cargo hands tests
//! the path of their own package's binaries only), with its allocator.

#[global_allocator]
static ALLOC: ferry::allocator::Mimalloc = ferry::allocator::Mimalloc;

fn main() {
    let code = ferry::Program::new("ferry")
        .version(env!("CARGO_PKG_VERSION"))
        .about("A reverse proxy with nginx's upstream semantics, on Pingora")
        .run::<ferry::serde::de::IgnoredAny, _>(|_| Ok(ferry::DefaultProxy));
    std::process::exit(code);
}
